"""Recording what each layer of a training net does, so that ``dnnlab doctor`` can judge it later.

A :class:`LayerRecorder` is a training callback. At the start of training
and then every ``every`` epochs it runs one fixed *probe batch* of training images through the
live model in train mode (dropout active, batch norm on batch statistics: what training sees) and
writes, per dense layer, the activation mean and std, the fraction of dead units and of saturated
outputs, the RMS of the kernel's gradient and of the back-propagated signal, and the
update-to-weight ratio, to ``RUN_DIR/layers.csv``.

Why a probe batch and not the training batches: the training loop stays untouched (no hooks on
the hot path, no host syncs per step), the numbers of two records are comparable (same images),
and the cost is one forward and backward pass of ``PROBE_SIZE`` images per record, i.e. about
``PROBE_SIZE / batch_size`` training steps out of an epoch's thousand or more.

The update-to-weight ratio is ``||W_now - W_prev|| / ||W_prev|| / steps`` between two records:
the kernel's net displacement per optimizer step, relative to its size. Being a net displacement,
it underestimates the size of single steps when they point in different directions (noise that
cancels), which is what matters for the learning-rate diagnoses: the weights went somewhere, or
they did not.

The probe leaves training exactly as it was: gradients are taken with ``torch.autograd.grad``
(``.grad`` untouched), batch-norm running statistics are restored, and the random state is forked
so that dropout masks drawn by the probe do not shift the training run's random stream.
"""

from __future__ import annotations

import csv
import io as _io
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnnlab.analysis.stats import layer_stats
from dnnlab.config import RunConfig
from dnnlab.errors import DnnlabError
from dnnlab.io import write_text
from dnnlab.train.callbacks import Callback, Logs, RunView, Stops
from dnnlab.train.results import FitResult

LAYERS_CSV = "layers.csv"
TENSORBOARD_DIR = "tensorboard"
COLUMNS = ("epoch", "step", "layer", "name", "units", "output", "act_mean", "act_std", "dead_frac",
           "saturated_frac", "grad_rms", "out_grad_rms", "update_ratio")
# 256 images: enough that a unit which never fires on them is dead for practical purposes (a
# unit active on 1% of images is missed with probability 0.99**256 = 8%), and 8 steps' worth of
# compute at batch 32, i.e. under 1% of a 45,000-image epoch.
PROBE_SIZE = 256
PROBE_SEED = 0   # the same images for every run, so records of two runs compare


def probe_batch(train: tuple[torch.Tensor, torch.Tensor], size: int = PROBE_SIZE,
                seed: int = PROBE_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` of the training images and labels ``train``, drawn without replacement with a
    fixed ``seed``."""
    x, y = train
    if len(y) == 0:
        raise DnnlabError("the training split is empty; the doctor needs training images to probe "
                          "(check data.classes / data.per_class / data.limit)")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(y), generator=g)[:size]
    return x[idx].clone(), y[idx].clone()


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps per epoch: the last, partial batch counts as a step."""
    return max(1, math.ceil(n_train / batch_size))


class LayerRecorder(Callback):
    """The callback that writes ``layers.csv`` (see the module docstring) for model ``model``
    (its index among the K models a run trains; 0 for a single model).

    ``every`` is the interval in epochs. At the start of a run (not of a resume) it records the
    net at initialization (epoch 0), where a bad init shows, and the only record a run that
    diverges in its first epoch has.
    """

    def __init__(self, run_dir: str | Path, x_probe: torch.Tensor, y_probe: torch.Tensor, *,
                 steps_per_epoch: int, every: int = 1, model: int = 0):
        if every < 1:
            raise DnnlabError(f"record_every = {every}: use a number of epochs >= 1 (or leave "
                              "recording off)")
        self.path = Path(run_dir) / LAYERS_CSV
        self.x, self.y = x_probe, y_probe
        self.steps_per_epoch, self.every = int(steps_per_epoch), int(every)
        self.model = int(model)
        self.rows: list[dict[str, Any]] = []
        self._previous: dict[str, torch.Tensor] = {}
        self._previous_step: int | None = None
        self._loaded = False

    # the callback protocol -------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        return f"LayerRecorder.{self.model}"

    def on_train_begin(self, run: RunView) -> None:
        if run.start_epoch == 1:                    # the net at initialization (not on resume)
            self.record(0, run.model(self.model))

    def on_epoch_end(self, run: RunView, epoch: int, logs: Logs) -> Stops:
        if self.model in logs and epoch % self.every == 0:
            self.record(epoch, run.model(self.model))
        return None

    # ------------------------------------------------------------------------------------------
    def record(self, epoch: int, model: nn.Module) -> list[dict[str, Any]]:
        """Measure ``model`` now, append the rows, rewrite ``layers.csv`` atomically."""
        if not self._loaded:
            self._keep_earlier_rows(epoch)
        step = epoch * self.steps_per_epoch
        device = next(model.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            stats = layer_stats(model, self.x.to(device), self.y.to(device), train=True)
        modules = dict(model.named_modules())
        new = []
        for s in stats:
            w = modules[s["name"]].weight.detach()
            ratio = math.nan
            prev = self._previous.get(s["name"])
            if prev is not None and self._previous_step is not None and step > self._previous_step:
                prev = prev.to(w.device)
                ratio = float((w.double() - prev).norm() / prev.norm().clamp_min(1e-30)
                              / (step - self._previous_step))
            self._previous[s["name"]] = w.double().clone()
            new.append({"epoch": epoch, "step": step, "layer": s["layer"], "name": s["name"],
                        "units": s["units"], "output": int(s["output"]),
                        "act_mean": s["mean"], "act_std": s["std"], "dead_frac": s["dead"],
                        "saturated_frac": s["saturated"], "grad_rms": s["grad_rms"],
                        "out_grad_rms": s["out_grad_rms"], "update_ratio": ratio})
        self._previous_step = step
        self.rows.extend(new)
        write_text(self.path, format_rows(self.rows))
        return new

    def _keep_earlier_rows(self, epoch: int) -> None:
        """A resumed run keeps the records of the epochs before the one it records first."""
        self._loaded = True
        if self.path.exists():
            self.rows = [r for r in read_layers(self.path) if r["epoch"] < epoch]


def format_rows(rows: list[dict[str, Any]]) -> str:
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([_fmt(r[c]) for c in COLUMNS])
    return buf.getvalue()


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if v is None:
        return "nan"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


_INT_COLUMNS = ("epoch", "step", "layer", "units", "output")


def read_layers(path: str | Path) -> list[dict[str, Any]]:
    """``layers.csv`` back as a list of dicts (numbers as int / float, ``output`` as bool)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DnnlabError(f"{path} not found: the run was trained without layer recording; "
                          "train it with recording on (or run 'dnnlab doctor CONFIG.toml')") from None
    except UnicodeDecodeError:
        raise DnnlabError(f"{path} is not UTF-8 text; the file is damaged (record the run "
                          "again)") from None
    except OSError as e:
        raise DnnlabError(f"{path} cannot be read ({e.strerror or e})") from None
    rows = []
    reader = csv.DictReader(_io.StringIO(text))
    try:
        fields = reader.fieldnames or []
    except csv.Error as e:
        raise DnnlabError(f"{path} is not valid CSV ({e}); the file is damaged") from None
    missing = [c for c in COLUMNS if c not in fields]
    if missing:
        raise DnnlabError(f"{path} lacks the columns {', '.join(missing)}; it was not written by "
                          "dnnlab's layer recorder (record the run again)")
    while True:
        try:
            raw = next(reader, None)
            if raw is None:
                break
            row = {c: (int(raw[c]) if c in _INT_COLUMNS else
                       raw[c] if c == "name" else float(raw[c])) for c in COLUMNS}
        except (ValueError, TypeError, csv.Error) as e:
            raise DnnlabError(f"{path} line {reader.line_num}: a malformed row "
                              f"({str(e)[:100]}); the file is damaged, record the run "
                              "again") from None
        row["output"] = bool(row["output"])
        rows.append(row)
    return rows


class TensorBoardLogger(Callback):
    """Writes TensorBoard event files into ``RUN_DIR/tensorboard``: one folder per run, so that
    ``tensorboard --logdir runs/`` overlays runs.

    Per epoch: every numeric metric the loop reports (loss, accuracy, val_loss, val_accuracy, lr,
    seconds) as scalars under ``epoch/``. Every ``histogram_every`` epochs (and at the start, when
    :meth:`on_train_begin` is called): per dense layer, histograms of the kernel, of its gradient
    and of the layer's activation on the probe batch.
    """

    def __init__(self, run_dir: str | Path, x_probe: torch.Tensor, y_probe: torch.Tensor, *,
                 histogram_every: int = 1, model: int = 0):
        # optional dependency: tensorboard (pip install -e '.[tensorboard]'), imported only here
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise DnnlabError("TensorBoard logging needs the tensorboard package; install it with "
                              "pip install -e '.[tensorboard]' in the dnnlab checkout, or switch "
                              "tensorboard off") from None
        if histogram_every < 0:
            raise DnnlabError(f"histogram_every = {histogram_every}: use 0 (only at the start) "
                              "or a number of epochs >= 1")
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.x, self.y = x_probe, y_probe
        self.histogram_every = int(histogram_every)
        self.model = int(model)

    @property
    def state_key(self) -> str:
        return f"TensorBoardLogger.{self.model}"

    def on_train_begin(self, run: RunView) -> None:
        if run.start_epoch == 1:
            self.histograms(0, run.model(self.model))

    def on_epoch_end(self, run: RunView, epoch: int, logs: Logs) -> Stops:
        if self.model not in logs:
            return None
        for key, value in logs[self.model].items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{key}", value, epoch)
        if self.histogram_every and epoch % self.histogram_every == 0:
            self.histograms(epoch, run.model(self.model))
        self.writer.flush()
        return None

    def on_train_end(self, run: RunView, results: list[FitResult] | None) -> None:
        self.close()

    def histograms(self, epoch: int, model: nn.Module) -> None:
        device = next(model.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            stats = layer_stats(model, self.x.to(device), self.y.to(device), train=True,
                                tensors=True)
        for s in stats:
            tag = f"layer{s['layer']:02d}"
            for kind in ("weight", "grad", "values"):
                t = s[kind]
                if t is not None and bool(torch.isfinite(t).all()):
                    name = "activation" if kind == "values" else kind
                    self.writer.add_histogram(f"{name}/{tag}", t.float().cpu(), epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def callbacks_for(cfg: RunConfig, train: tuple[torch.Tensor, torch.Tensor],
                  run_dir: str | Path | None, model: int = 0) -> list[Callback]:
    """The recording callbacks ``cfg.train`` asks for, for model ``model`` of a run; the API's
    entry points (:mod:`dnnlab.runs`) add them to every run that has a run directory.

    ``train.record_every`` epochs between layer records (0 = none); ``train.tensorboard`` adds
    :class:`TensorBoardLogger` with histograms every ``train.histogram_every`` epochs. Without a
    run directory there is nowhere to write: no callbacks.
    """
    t = cfg.train
    if run_dir is None or not (t.record_every or t.tensorboard):
        return []
    x, y = probe_batch(train)
    out: list[Callback] = []
    if t.record_every:
        out.append(LayerRecorder(run_dir, x, y, every=t.record_every, model=model,
                                 steps_per_epoch=steps_per_epoch(len(train[1]), t.batch_size)))
    if t.tensorboard:
        out.append(TensorBoardLogger(run_dir, x, y, histogram_every=t.histogram_every,
                                     model=model))
    return out
