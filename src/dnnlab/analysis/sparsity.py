"""Sparse models: measuring exact zeros, magnitude pruning, gradual pruning, pruning a saved run.

The chapter names three ways to a sparse model (most weights exactly zero): zero the tiny weights
after training, train with an L1 penalty (``model.l1``), or use a pruning toolkit; the first
edition adds FTRL with L1 (``optim.name = "ftrl"``, ``optim.l1``). This module holds what the
first and third need; L1 and FTRL are plain config settings of :func:`dnnlab.train.fit`.

* Sparsity is counted on the **kernels**, the weight matrices of every ``nn.Linear`` (the output
  layer included, biases and BatchNorm excluded), as the fraction of entries exactly equal to 0.
* Magnitude pruning uses ``torch.nn.utils.prune.global_unstructured`` with an explicit parameter
  list and LAMP scores (smallest ``|w|`` first within a layer; how much each layer gives up is
  set globally without ever emptying a layer, which raw global ``|w|`` does). It then calls
  ``prune.remove`` so the model is left with plain ``weight`` parameters, no
  ``weight_orig``/``weight_mask`` and no forward pre-hooks (a model with hooks left on would save
  and load differently from the one that was measured).
* Gradual magnitude pruning follows the TensorFlow Model Optimization Toolkit's
  ``PolynomialDecay`` (Zhu & Gupta, 2017): every ``frequency`` steps from ``begin_step`` to
  ``end_step`` the mask is recomputed at ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))**3``
  and kept in force between updates. TFMOT ranks weights within each layer; dnnlab ranks them
  as for one-shot pruning (LAMP, globally), so the two methods are compared on equal terms.
* Masks are kept in force during ``fit`` by a forward pre-hook on the model that multiplies the
  kernels by their masks in place before every forward pass. Optimizer state (Adam's moments)
  may nudge a pruned weight between steps, but it is zeroed again before it is ever used, and
  at the end of each epoch, so checkpoints hold exact zeros. The parameters stay the same
  objects with the same names, so ``fit``'s optimizer, checkpoints and state dicts are unaffected.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from dnnlab import data as datasets
from dnnlab import io, rundir
from dnnlab.config import DATASET_SHAPES, FIXED_SHAPE_DATASETS, ModelConfig, RunConfig, load_config, replace
from dnnlab.errors import DnnlabError
from dnnlab.nn.mlp import build_mlp
from dnnlab.train import evaluate, fit, resolve_device
from dnnlab.train import state as run_state
from dnnlab.train.callbacks import Callback, Logs, RunView, Stops
from dnnlab.train.checkpoint import load_model, save_model
from dnnlab.train.driver import to_device


def kernel_parameters(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, "weight")`` for every ``nn.Linear`` in ``model``: the explicit pruning list."""
    params = [(m, "weight") for m in model.modules() if isinstance(m, nn.Linear)]
    if not params:
        raise DnnlabError("the model has no nn.Linear layers, so there are no kernels to count "
                          "or prune")
    return params


def _check_fraction(value: float, what: str) -> float:
    if not 0.0 <= value < 1.0:
        raise DnnlabError(f"{what} = {value} must lie in [0, 1) (e.g. 0.9 for 90% zeros)")
    return float(value)


@torch.no_grad()
def sparsity(model: nn.Module) -> float:
    """The fraction of kernel entries that are exactly zero."""
    params = kernel_parameters(model)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in params)
    return zeros / sum(m.weight.numel() for m, _ in params)


@torch.no_grad()
def near_zero_fraction(model: nn.Module, tol: float) -> float:
    """The fraction of kernel entries with ``|w| <= tol`` (what "tiny weights" means for L1)."""
    params = kernel_parameters(model)
    small = sum(int((m.weight.abs() <= tol).sum()) for m, _ in params)
    return small / sum(m.weight.numel() for m, _ in params)


@torch.no_grad()
def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Exact-zero fraction per kernel, keyed by the module's name (e.g. ``hidden.0.linear``)."""
    return {name: float((m.weight == 0).float().mean())
            for name, m in model.named_modules() if isinstance(m, nn.Linear)}


SCORES = ("lamp", "magnitude")


@torch.no_grad()
def lamp_scores(weight: Tensor) -> Tensor:
    """LAMP scores (Lee et al., ICLR 2021): ``w_u**2 / sum of w_v**2 over |w_v| >= |w_u|``.

    Within a layer the order is that of ``|w|`` (pruning still removes the smallest weights
    first); across layers the scores are comparable, so one global ranking decides how much each
    layer gives up. The largest weight of every layer scores 1, the maximum, so no layer is
    emptied before the whole model is.
    """
    sq = weight.detach().float().flatten().square()
    sorted_sq, order = sq.sort()
    suffix = sorted_sq.flip(0).cumsum(0).flip(0)
    scores = torch.empty_like(sq)
    scores[order] = sorted_sq / suffix.clamp_min(torch.finfo(sq.dtype).tiny)
    return scores.view_as(weight).to(weight.dtype)


def magnitude_prune_(model: nn.Module, target: float, *, score: str = "lamp") -> list[Tensor]:
    """Zero the ``target`` fraction of the smallest kernel weights, ranked globally, in place.

    Uses ``prune.global_unstructured`` with :func:`kernel_parameters` as the explicit list, then
    ``prune.remove`` on each, so no masks, ``weight_orig`` or hooks remain (the parameters stay the
    same objects, so an optimizer holding them keeps working). Returns the masks (1 = kept,
    0 = pruned, in the kernels' dtype), one per kernel, in :func:`kernel_parameters` order.
    Weights that were already zero count towards the target (they rank lowest).

    ``score="magnitude"`` ranks raw ``|w|`` across all layers. That empties whole layers: a wide
    first layer has smaller He-initialized weights (std sqrt(2/784) vs sqrt(2/100) on MNIST), and
    a 5x100 MNIST net (5 epochs of Adam on 8,000 images) pruned to 90% that way lost 100% of its
    first layer: 9% test accuracy, 55% after one epoch of fine-tuning. ``score="lamp"`` (the
    default) keeps the order of ``|w|`` within each layer but makes layers comparable
    (:func:`lamp_scores`): 29%, and 90% after the same fine-tuning.
    """
    _check_fraction(target, "sparsity")
    if score not in SCORES:
        raise DnnlabError(f"pruning score {score!r} is unknown; choose one of: {', '.join(SCORES)}")
    params = kernel_parameters(model)
    total = sum(m.weight.numel() for m, _ in params)
    orders = [list(m._parameters) for m, _ in params]
    scores = {(m, name): lamp_scores(m.weight) for m, name in params} if score == "lamp" else None
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured,
                              importance_scores=scores, amount=int(round(target * total)))
    masks = [m.weight_mask.detach().clone() for m, _ in params]
    for (m, name), order in zip(params, orders):
        prune.remove(m, name)
        # prune re-registers the parameter last; put it back in place so the state dict and
        # parameter order are those of an unpruned model
        for k in (k for k in order if k in m._parameters):
            m._parameters[k] = m._parameters.pop(k)
    return masks


@torch.no_grad()
def apply_masks_(model: nn.Module, masks: list[Tensor]) -> list[Tensor]:
    """Multiply each kernel by its mask in place (pruned entries become exact zeros).

    Returns the masks on the kernels' device and dtype (moved only when they were not), so a
    caller that applies them every step can keep the moved copies.
    """
    params = kernel_parameters(model)
    if len(params) != len(masks) or any(m.weight.shape != k.shape for (m, _), k in zip(params, masks)):
        raise DnnlabError(f"{len(masks)} masks do not fit the {len(params)} kernels of this "
                          "model; the masks belong to another model")
    out = []
    for (m, _), mask in zip(params, masks):
        w = m.weight
        if mask.device != w.device or mask.dtype != w.dtype:
            mask = mask.to(w)
        w.mul_(mask)
        out.append(mask)
    return out


@dataclass(frozen=True)
class PolynomialSchedule:
    """TFMOT's ``PolynomialDecay``: target sparsity at step t, and whether to prune at t."""
    final_sparsity: float
    begin_step: int
    end_step: int
    frequency: int = 100
    initial_sparsity: float = 0.0
    power: float = 3.0

    def __post_init__(self):
        _check_fraction(self.initial_sparsity, "initial_sparsity")
        _check_fraction(self.final_sparsity, "final_sparsity")
        if self.begin_step < 0 or self.end_step <= self.begin_step:
            raise DnnlabError(f"pruning steps begin={self.begin_step}, end={self.end_step}: the "
                              "end must come after the beginning, which must be >= 0")
        if self.frequency < 1:
            raise DnnlabError(f"pruning frequency = {self.frequency} must be >= 1 step")

    def sparsity(self, step: int) -> float:
        """``s_f + (s_i - s_f) * (1 - p)**power`` with ``p`` the clipped progress in [0, 1]."""
        p = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1 - p) ** self.power

    def should_prune(self, step: int) -> bool:
        """True at ``begin_step``, every ``frequency`` steps after it, up to ``end_step``."""
        return (self.begin_step <= step <= self.end_step
                and (step - self.begin_step) % self.frequency == 0)


class PruningCallback(Callback):
    """Keeps kernels masked while :func:`dnnlab.train.fit` trains, optionally on a schedule.

    With ``masks`` the mask is fixed (fine-tuning a pruned model); with ``schedule`` the mask is
    recomputed by global magnitude pruning at the scheduled steps (gradual pruning). A step is
    one forward pass in training mode, which is one optimizer step in ``fit``. Pass the object in
    ``callbacks=[...]`` and call :meth:`remove` after training: it zeroes the pruned weights for
    good and takes the hook off.
    """

    def __init__(self, model: nn.Module, *, masks: list[Tensor] | None = None,
                 schedule: PolynomialSchedule | None = None):
        if (masks is None) == (schedule is None):
            raise DnnlabError("PruningCallback needs either fixed masks or a schedule (one of them)")
        self.model, self.masks, self.schedule = model, masks, schedule
        self.step = 0
        self.updates: list[tuple[int, float]] = []      # (step, sparsity reached) per mask update
        self.epoch_sparsity: list[float] = []
        self._handle = model.register_forward_pre_hook(self._before_forward)
        if masks is not None:
            self.masks = apply_masks_(model, masks)

    def _before_forward(self, module: nn.Module, args: Any) -> None:
        if module.training:
            s = self.schedule
            if s is not None and s.should_prune(self.step):
                self.masks = magnitude_prune_(self.model, s.sparsity(self.step))
                self.updates.append((self.step, sparsity(self.model)))
            self.step += 1
        if self.masks is not None:
            self.masks = apply_masks_(self.model, self.masks)

    def on_epoch_end(self, run: RunView, epoch: int, logs: Logs) -> Stops:
        if self.masks is not None:
            apply_masks_(self.model, self.masks)
        self.epoch_sparsity.append(sparsity(self.model))
        return None

    def remove(self) -> None:
        """Apply the masks one last time and remove the hook (idempotent)."""
        if self.masks is not None:
            apply_masks_(self.model, self.masks)
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def _masked_cfg(cfg):
    """Early stopping or restoring an earlier epoch would hand back a model at another sparsity."""
    return replace(cfg, **{"train.patience": None, "train.restore_best": False, "train.fast": False})


def gradual_prune_fit(cfg, data, final_sparsity: float, *, model: nn.Module | None = None,
                      initial_sparsity: float = 0.0, begin_fraction: float = 0.0,
                      end_fraction: float = 0.7, frequency: int | None = None,
                      run_dir: str | Path | None = None, callbacks=()):
    """Train with gradual magnitude pruning up to ``final_sparsity``; returns ``(FitResult, callback)``.

    The schedule runs from ``begin_fraction`` to ``end_fraction`` of all training steps (the rest
    trains at the final sparsity so the net can recover), pruning every ``frequency`` steps
    (default: 20 updates in all, the last at the end; TFMOT's default is every 100 steps). Early stopping and
    restore-best are turned off: the model returned is the last one, at the final sparsity.
    """
    if not 0.0 <= begin_fraction < end_fraction <= 1.0:
        raise DnnlabError(f"pruning runs from begin_fraction={begin_fraction} to end_fraction="
                          f"{end_fraction} of training; they need 0 <= begin < end <= 1")
    cfg = _masked_cfg(cfg)
    steps_per_epoch = math.ceil(len(data.train) / cfg.train.batch_size)
    total = steps_per_epoch * cfg.train.epochs
    begin, end = int(begin_fraction * total), int(end_fraction * total)
    if frequency is None:   # about 20 updates, the last one exactly at the end
        frequency = max(1, (end - begin) // 20)
        end = begin + frequency * max(1, (end - begin) // frequency)
    schedule = PolynomialSchedule(final_sparsity, begin, end, frequency, initial_sparsity)
    if model is None:
        model = build_mlp(cfg.model, data.n_features, data.n_classes, seed=cfg.train.seed)
    cb = PruningCallback(model, schedule=schedule)
    try:
        result = fit(cfg, data, run_dir, model=model, callbacks=[cb, *callbacks])
    finally:
        cb.remove()
    return result, cb


def finetune_masked(cfg, data, model: nn.Module, masks: list[Tensor], epochs: int, callbacks=()):
    """Train a pruned ``model`` for ``epochs`` with its zeros kept at zero; returns the FitResult."""
    cfg = replace(_masked_cfg(cfg), **{"train.epochs": epochs})
    cb = PruningCallback(model, masks=masks)
    try:
        return fit(cfg, data, model=model, callbacks=[cb, *callbacks])
    finally:
        cb.remove()


def _label(target: float) -> str:
    return f"pruned-{target:g}"


def run_files(run_dir: str | Path) -> tuple[Path, Path]:
    """(config.toml, model.safetensors) of a finished run, or one line saying which is missing.
    Checked before anything touches the folder: ``dnnlab prune`` calls it before it holds (and so
    creates) the run directory."""
    hint = "pass a run directory that 'dnnlab train' finished (it prints the folder at the end)"
    return (rundir.run_file(run_dir, "config.toml", hint=hint),
            rundir.run_file(run_dir, "model.safetensors", hint=hint))


def check_belongs(model: nn.Module, cfg: RunConfig, model_path: Path, config_path: Path) -> None:
    """Refuse a run whose model.safetensors is not the model its config.toml describes (one of
    them edited or replaced): another architecture, input width or number of classes."""
    if dataclasses.asdict(model.config) != dataclasses.asdict(ModelConfig(**dataclasses.asdict(cfg.model))):
        raise DnnlabError(f"{model_path} holds another model than {config_path} describes; "
                          "one of them was edited or replaced")
    features = DATASET_SHAPES[cfg.data.name][0] if cfg.data.name in FIXED_SHAPE_DATASETS else None
    if features is not None and model.in_features != features:
        raise DnnlabError(f"{model_path} takes {model.in_features} input features but "
                          f"{cfg.data.name} has {features}; the run's files do not belong together")
    if cfg.data.classes and len(cfg.data.classes) != model.n_classes:
        raise DnnlabError(f"{model_path} has {model.n_classes} outputs but data.classes has "
                          f"{len(cfg.data.classes)} classes; the run's files do not belong together")


def prune_run(run_dir: str | Path, target: float, finetune_epochs: int = 2, *,
              data_dir: str | None = None, device: str | None = None, lr: float | None = None,
              progress: bool = True, accept_legacy: bool = False) -> dict[str, Any]:
    """Prune a trained run to ``target`` sparsity, fine-tune it with the mask fixed, and report.

    Reads ``run_dir/config.toml`` and ``run_dir/model.safetensors``; measures validation and
    test accuracy before pruning, right after, and after ``finetune_epochs`` epochs of
    fine-tuning (the run's optimizer, at ``lr`` when given); writes ``model.safetensors`` and
    ``report.json`` into ``run_dir/pruned-<target>/`` and returns the report. The folder is
    checked first, and the data loaded against the run's record
    (:func:`dnnlab.train.state.check_run`, ``accept_legacy`` as there): an edited config.toml or
    another dataset under the expected file name is refused, not pruned and reported on.
    """
    _check_fraction(target, "--sparsity")
    if finetune_epochs < 0:
        raise DnnlabError(f"--epochs {finetune_epochs}: the number of fine-tuning epochs must be >= 0")
    run_dir = Path(run_dir)
    config_path, model_path = run_files(run_dir)
    record = run_state.check_run(run_dir, accept_legacy=accept_legacy)
    t0 = time.perf_counter()
    cfg = load_config(config_path)
    model = load_model(model_path)                     # checksum and shapes, on the CPU first
    check_belongs(model, cfg, model_path, config_path)
    changes: dict[str, Any] = {"train.progress": progress}
    if data_dir is not None:
        changes["data.data_dir"] = data_dir
    if device is not None:
        changes["train.device"] = device
    if lr is not None:
        changes["optim.lr"] = lr
    cfg = replace(cfg, **changes)
    data = datasets.load_from_config(cfg.data, progress=progress)   # via the package: patchable
    run_state.check_data(run_dir, record, data.fingerprint())
    dev = resolve_device(cfg.train.device)
    model = model.to(dev)
    tensors = to_device(data, dev)

    def scores() -> dict[str, float]:
        out = {"sparsity": sparsity(model)}
        for split in ("valid", "test"):
            if split in tensors:
                r = evaluate(model, *tensors[split], cfg.train.eval_batch_size)
                out[f"{split}_loss"], out[f"{split}_accuracy"] = r["loss"], r["accuracy"]
        return out

    report: dict[str, Any] = {"run_dir": str(run_dir), "target_sparsity": target,
                              "finetune_epochs": finetune_epochs, "before": scores()}
    masks = magnitude_prune_(model, target)
    report["pruned"] = scores()
    if finetune_epochs > 0:
        result = finetune_masked(cfg, data, model, masks, finetune_epochs)
        report["finetuned"] = scores()
        report["finetune_history"] = {k: result.history[k] for k in ("loss", "val_loss",
                                                                     "val_accuracy", "seconds")}
    report["layer_sparsity"] = layer_sparsity(model)
    out = run_dir / _label(target)
    save_model(model, out / "model.safetensors",
               {"pruned_from": str(run_dir), "target_sparsity": target,
                "sparsity": sparsity(model), "finetune_epochs": finetune_epochs})
    report["model"] = str(out / "model.safetensors")
    report["seconds"] = time.perf_counter() - t0
    io.write_json(out / "report.json", report)
    return report
