"""The one callback protocol of the training driver, and the callbacks dnnlab itself attaches.

Everything that happens around the epoch loop, rather than in it, is a :class:`Callback`: early
stopping, the plateau schedule, the progress bar, metrics.csv with checkpoints and the resume
state (:class:`RunWriter`), the thread policy, the doctor's layer records, TensorBoard, and user
code. :func:`dnnlab.train.fit` and :func:`dnnlab.train.train_many` take the same objects.

A callback sees the run as a :class:`RunView` (declared here, the trainer implements it: the
configs, the book, the epochs and steps, model i now or at its best, its rate multiplier, the
state to checkpoint) and the K models by *model index* (the variant's position), never by row
of the stack. The hooks, in the order they run (Keras' names; every hook is optional, the base
class does nothing):

``on_train_begin(run)``
    before the first step (``run.start_epoch`` says where a resumed run goes on).
``on_epoch_begin(run, epoch)``
    before the epoch's first step.
``on_steps_end(run, epoch, losses, lo, hi)``
    at each host sync (every ``CHECK_EVERY`` steps and at the epoch's end, never per step: a
    per-step sync would cost more than the step). ``losses`` maps each model in the stack to its
    loss at the epoch's steps ``[lo, hi)``, new since the last call: a (hi - lo,) tensor on the
    device. Reading it syncs: only callbacks that need the step losses (the LR finder) do.
``on_epoch_end(run, epoch, logs) -> stops``
    after the epoch's divergence check and evaluation; ``logs`` maps each model still
    training to its metrics (epoch, loss, accuracy, val_loss, val_accuracy, lr, seconds). It may
    return the models to stop: a collection of model indices, or a dict model -> reason.
    Stops are applied at once (in callback order), so a later callback sees them in
    ``run.book.ended``; at the last epoch a stop is moot (the run completes).
``on_train_end(run, results)``
    once, after the last epoch with every model's :class:`FitResult`; with ``results = None``
    when training raised (close files, write nothing).

Callbacks run in the order of their ``order`` attribute (0 by default; the run writer is last,
100, so it saves the state after every stop of the epoch). A callback with state that a resume
must restore returns it from ``state_dict`` (plain data and tensors) and takes it back in
``load_state_dict``; it is saved under ``state_key`` (default: the class name).
"""

from __future__ import annotations

import csv
import io as _io
import math
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor, nn
from tqdm import tqdm  # the plain bar: tqdm.auto warns in a notebook without ipywidgets

from dnnlab import config as config_mod
from dnnlab import io
from dnnlab.data.preprocessing import Preprocessing
from dnnlab.optim.schedules import Plateau
from dnnlab.train import checkpoint as ckpt
from dnnlab.train import state as run_state
from dnnlab.train import threads
from dnnlab.train.book import Book
from dnnlab.train.results import FitResult

Logs = dict[int, dict[str, float]]
Stops = Collection[int] | Mapping[int, str] | None


class RunView(Protocol):
    """What a callback sees of the run (:class:`dnnlab.train.driver.Trainer` is one): models by
    model index only, and nothing of the stack's rows, the optimizer or the loop's buffers."""

    @property
    def configs(self) -> Sequence[config_mod.RunConfig]:
        """Model i's full config at ``configs[i]``."""
        ...

    @property
    def book(self) -> Book:
        """Per-model history, best epoch and value, who has ended (:mod:`dnnlab.train.book`)."""
        ...

    @property
    def epochs(self) -> int:
        """``train.epochs``: the last epoch."""
        ...

    @property
    def steps_per_epoch(self) -> int:
        ...

    @property
    def max_steps(self) -> int | None:
        """The run ends after this many steps (the LR finder's), else None."""
        ...

    @property
    def start_epoch(self) -> int:
        """The first epoch this run trains: > 1 after a resume."""
        ...

    @property
    def warnings(self) -> Sequence[str]:
        """What makes the run's numbers weak (:func:`dnnlab.data.caveats.split_warnings`)."""
        ...

    def model(self, i: int, *, best: bool = False) -> nn.Module:
        """Model i with its live (or best) weights, to read: a copy on the stacked backend."""
        ...

    def set_lr_scale(self, i: int, scale: float) -> None:
        """Model i's rate multiplier, from the next epoch on."""
        ...

    def state_dict(self, epoch: int) -> dict[str, Any]:
        """Everything a resume after ``epoch`` needs (what the run writer checkpoints)."""
        ...


class Callback:
    """Base class of the training callbacks (module docstring): every hook does nothing."""

    order = 0

    @property
    def state_key(self) -> str:
        return type(self).__name__

    def on_train_begin(self, run: RunView) -> None:
        """Before the first step."""

    def on_epoch_begin(self, run: RunView, epoch: int) -> None:
        """Before the epoch's first step."""

    def on_steps_end(self, run: RunView, epoch: int, losses: Mapping[int, Tensor], lo: int,
                     hi: int) -> None:
        """At a host sync: steps ``[lo, hi)`` of the epoch are done."""

    def on_epoch_end(self, run: RunView, epoch: int, logs: Logs) -> Stops:
        """After the epoch: return the models to stop, or None."""
        return None

    def on_train_end(self, run: RunView, results: list[FitResult] | None) -> None:
        """After training (``results`` None when it raised)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state_dict` returned."""


class EarlyStopping(Callback):
    """Stop each model after ``train.patience`` epochs (its own config's) without improving the
    monitored metric by more than ``train.min_delta`` (``run.book`` tracks the best)."""

    def __init__(self) -> None:
        self.wait: dict[int, int] = {}

    def on_epoch_end(self, run: RunView, epoch: int, logs: Logs) -> Stops:
        stops = {}
        for i in logs:
            self.wait[i] = 0 if run.book.best_epoch[i] == epoch else self.wait.get(i, 0) + 1
            patience = run.configs[i].train.patience
            if patience is not None and self.wait[i] >= patience:
                stops[i] = (f"no improvement of {run.book.monitor} for {self.wait[i]} epochs; "
                            f"best at epoch {run.book.best_epoch[i]}")
        return stops

    def state_dict(self) -> dict[str, Any]:
        return {"wait": {str(i): w for i, w in self.wait.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait = {int(i): int(w) for i, w in state["wait"].items()}


class ReduceLROnPlateau(Callback):
    """The ``performance`` schedule (Keras' ReduceLROnPlateau on val_loss): each model's rate
    multiplier (``run.set_lr_scale(i, x)``), which the next epoch's rate table uses."""

    def __init__(self) -> None:
        self.plateaus: dict[int, Plateau] = {}
        self._resumed: dict[int, dict[str, Any]] = {}    # saved states, until the configs are known

    def on_train_begin(self, run: RunView) -> None:
        for i, c in enumerate(run.configs):
            self.plateaus[i] = Plateau(c.optim)           # each model's own factor and patience
            if i in self._resumed:
                self.plateaus[i].load(self._resumed[i])
            run.set_lr_scale(i, self.plateaus[i].multiplier)

    def on_epoch_end(self, run: RunView, epoch: int, logs: Logs) -> Stops:
        for i, m in logs.items():
            self.plateaus[i].update(m["val_loss"])
            run.set_lr_scale(i, self.plateaus[i].multiplier)
        return None

    def state_dict(self) -> dict[str, Any]:
        return {str(i): p.state() for i, p in self.plateaus.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resumed = {int(i): s for i, s in state.items()}


class Progress(Callback):
    """One tqdm bar over all steps of the run: the epoch, and the last epoch's metrics (one
    model) or how many models still train and the best so far (K models)."""

    order = 90

    def __init__(self) -> None:
        self.bar: Any = None

    def on_train_begin(self, run: RunView) -> None:
        total = run.epochs * run.steps_per_epoch if run.max_steps is None else run.max_steps
        self.bar = tqdm(total=total, initial=(run.start_epoch - 1) * run.steps_per_epoch,
                        unit="step", dynamic_ncols=True, file=sys.stderr, leave=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}"
                                   "{postfix}]")
        self.bar.set_description(self._desc(run, run.start_epoch))

    def _desc(self, run: RunView, epoch: int) -> str:
        where = f"epoch {min(epoch, run.epochs)}/{run.epochs}"
        if run.book.k == 1:
            return where
        return f"{len(run.book.training())} of {run.book.k} models training, {where}"

    def on_steps_end(self, run: RunView, epoch: int, losses: Mapping[int, Tensor], lo: int,
                     hi: int) -> None:
        if self.bar is not None and hi > lo:
            self.bar.update(hi - lo)

    def on_epoch_end(self, run: RunView, epoch: int, logs: Logs) -> Stops:
        if self.bar is None:
            return None
        going_on = epoch < run.epochs and bool(run.book.training())   # stops applied (order)
        self.bar.set_description(self._desc(run, epoch + 1 if going_on else epoch))
        if run.book.k == 1 and logs:
            m = next(iter(logs.values()))
            post = f"loss {m['loss']:.4f} acc {m['accuracy']:.4f}"
            if not math.isnan(m.get("val_loss", math.nan)):
                post += f" val_loss {m['val_loss']:.4f} val_acc {m['val_accuracy']:.4f}"
            self.bar.set_postfix_str(post)
        elif run.book.best_text():
            self.bar.set_postfix_str(run.book.best_text())
        return None

    def set_postfix(self, text: str) -> None:
        """Replace the bar's metrics text (the LR finder shows its smoothed loss)."""
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def on_train_end(self, run: RunView, results: list[FitResult] | None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ThreadPolicy(Callback):
    """Re-decides torch's CPU threads from the cores free now (:func:`dnnlab.train.threads.adjust`)
    at every epoch start and host sync; the trainer attaches it to every CPU run. A fixed
    ``--threads N`` (or :func:`dnnlab.train.threads.fixed`) makes it do nothing."""

    def on_epoch_begin(self, run: RunView, epoch: int) -> None:
        threads.adjust()

    def on_steps_end(self, run: RunView, epoch: int, losses: Mapping[int, Tensor], lo: int,
                     hi: int) -> None:
        threads.adjust()


class CsvLogger:
    """Rewrites metrics.csv atomically after each epoch (a kill never leaves a torn file)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, history: dict[str, list[float]]) -> None:
        buf = _io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        cols = list(history)
        w.writerow(cols)
        for row in zip(*(history[c] for c in cols)):
            w.writerow([_fmt(v) for v in row])
        io.write_text(self.path, buf.getvalue())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


class RunWriter(Callback):
    """Owns a run directory of one model: config.toml, the start record (config and data
    fingerprints, :func:`dnnlab.train.state.write_start`), metrics.csv, the resume state,
    periodic/best/final checkpoints and summary.json.

    It writes; it never reads back. Resuming (loading the state into the run) is
    :func:`dnnlab.train.fit`'s job before training starts. It runs last (``order`` 100), so the
    resume state it saves after an epoch holds every stop decided in that epoch.
    """

    order = 100

    def __init__(self, run_dir: Path, cfg: config_mod.RunConfig, *, resumed: bool = False,
                 data_fingerprint: dict[str, str] | None = None,
                 preprocessing: Preprocessing | None = None):
        self.run_dir = Path(run_dir)
        self.cfg, self.resumed = cfg, resumed
        self.data_fingerprint = data_fingerprint
        self.run_id: str | None = None
        self.preprocessing = preprocessing     # saved with the final model (checkpoint.save_final)
        self.metrics = CsvLogger(self.run_dir / "metrics.csv")

    def on_train_begin(self, run: RunView) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.run_dir.rglob(".*.tmp"):   # left by a write that was killed midway
            stale.unlink(missing_ok=True)
        io.write_text(self.run_dir / "config.toml", config_mod.to_toml(self.cfg))
        if not self.resumed:                        # the run id every model file carries
            self.run_id = run_state.write_start(self.run_dir, self.cfg, self.data_fingerprint)
        else:
            start = run_state.read_start(self.run_dir)
            self.run_id = start.run_id if start is not None else None
        self._summary({"status": "running", "resumed": self.resumed, "warnings": run.warnings})

    def on_epoch_end(self, run: RunView, epoch: int, logs: Logs) -> Stops:
        """After every stop of the epoch: metrics.csv, the resume state, checkpoints."""
        if 0 not in logs:
            return None
        self.metrics.write(run.book.history[0])
        run_state.save(self.run_dir, run.state_dict(epoch), self.run_id)
        every = self.cfg.train.checkpoint_every
        meta = {"epoch": epoch, run_state.RUN_ID: self.run_id}
        if every and epoch % every == 0:
            ckpt.save_model(run.model(0), self.run_dir / "checkpoints" /
                            f"epoch_{epoch:04d}.safetensors", meta)
        if run.book.best_epoch[0] == epoch:
            ckpt.save_model(run.model(0, best=True), self.run_dir / "checkpoints" /
                            "best.safetensors", meta)
        return None

    def on_train_end(self, run: RunView, results: list[FitResult] | None) -> None:
        if results is None:
            return
        (result,) = results
        result.run_dir = self.run_dir
        self.metrics.write(result.history)
        summary = result.summary()
        summary["name"] = self.cfg.name
        if result.status == "diverged":
            summary["status"] = "failed"
        ckpt.save_final(result.model, self.run_dir,
                        {"best_epoch": result.best_epoch, "status": summary["status"],
                         run_state.RUN_ID: self.run_id}, self.preprocessing)
        self._summary(summary)

    def _summary(self, data: dict[str, Any]) -> None:
        io.write_json(self.run_dir / "summary.json", {"name": self.cfg.name, **data})
