"""What is wrong with this network: findings as pure functions of the records and the curves.

Every check reads only its inputs (the rows of ``layers.csv``, the columns of ``metrics.csv``,
the run's config, its final status) and returns a :class:`Diagnosis` or None, so that each one
can be tested on numbers alone, in both directions, and reused wherever dnnlab judges a net's
health (``dnnlab explain selu``, the CIFAR-10 study's SELU answer). Each threshold is a named
constant with the reason for its value; the calibration behind them (MNIST, 5x100 and 20x100
nets, Nadam) is in the docs of :mod:`dnnlab.doctor`.

Findings are ranked by *tier* first (the set-up, then the signal's path through the layers,
then the learning rate, then generalization), then by how far past its threshold the measured
value lies. Over that order, causes stand above their symptoms: :data:`EXPLAINS` declares which
finding explains which and under which condition (a learning rate that jumps the weights explains
units that died *during training*; a bad init explains units dead *at initialization*), and each
symptom names the finding it follows from and how.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dnnlab.config import RunConfig

# --- thresholds ---------------------------------------------------------------------------------
# Back-propagated signal (RMS of d loss / d activation) of the first hidden layer relative to the
# last one. Healthy He/ELU and ReLU nets measure 0.5-5 throughout training, a 20-layer sigmoid
# net with Glorot init 1e-12; 100x either way means the lower layers learn at 1/100th (or 100x)
# the rate of the upper ones, which no single learning rate serves.
VANISHING_RATIO = 1e-2
EXPLODING_RATIO = 1e2
# The book: "you may find that half of your network's neurons are dead". Healthy ReLU nets on
# MNIST keep under 15% per layer.
DEAD_FRACTION = 0.5
# Share of a bounded activation's outputs in its flat tails (derivative < 4% of its peak, see
# dnnlab.analysis.stats.SATURATION_MARGIN). Glorot sigmoid/tanh nets stay under 15%; N(0, 1)
# sigmoid nets sit at 40-60% in every layer.
SATURATED_FRACTION = 0.3
# SELU's fixed point: mean 0, std 1 (Klambauer et al. 2017). 0.15 is the band the chapter's
# question is settled with in `dnnlab explain selu`; a stack self-normalizes when every layer from
# the first third on is inside it (the first layers may still be converging to the fixed point).
SELF_NORM_TOL = 0.15
SELF_NORM_SETTLE_FRACTION = 1 / 3
# Update-to-weight ratio per step (the kernel's net change per optimizer step relative to its
# norm). Healthy Nadam runs measure 3e-4 to 3e-3. Above 3e-2 the weights are replaced within ~30
# steps: the steps overshoot. Below 1e-5 in *every* layer (even the fastest) a thousand steps move
# the weights by 1%: the learning rate is too low to matter.
UPDATE_HIGH = 3e-2
UPDATE_LOW = 1e-5
# The learning-rate remedy aims the fastest layer at this ratio (Karpathy's rule of thumb, 1e-3).
UPDATE_TARGET = 1e-3
# Too-low rate needs the loss to agree: a run whose training loss fell by under 25% from its first
# to its last epoch has not started learning (healthy runs fall by 80-95% in 5 epochs).
LOW_LOSS_DROP = 0.25
# Oscillation: the training loss rose (by 2% or more: flat curves wobble by less) in at least
# half the epoch-to-epoch steps, over 4 epochs or more.
OSCILLATION_SHARE = 0.5
OSCILLATION_RISE = 0.02
OSCILLATION_MIN_EPOCHS = 4
# Overfitting: the validation loss ended 10% above its minimum, at least 5 epochs past it, while
# the training loss kept falling. 10% is beyond epoch-to-epoch noise of a 1,000-image validation
# set (2-5%); 5 epochs is beyond the patience a well-set early stopping would allow.
OVERFIT_RISE = 0.10
OVERFIT_EPOCHS_PAST = 5

TIERS = {"bad_initialization": 0, "exploding_gradients": 1, "vanishing_gradients": 1,
         "saturated_units": 2, "dead_units": 2, "broken_self_normalization": 2,
         "learning_rate_too_high": 3, "learning_rate_too_low": 3, "overfitting": 4}
SATURATING = ("sigmoid", "tanh")
INIT_FOR = {"sigmoid": "glorot_normal", "tanh": "glorot_normal", "selu": "lecun_normal",
            "softplus": "glorot_normal", "linear": "glorot_normal"}   # else he_normal


@dataclass
class Diagnosis:
    """One finding: what, where, the measured value against its threshold, and the remedy."""
    kind: str
    title: str
    measure: str              # what ``value`` is
    value: float
    threshold: float
    why: str                  # why the threshold has its value
    remedy: list[str]         # --set items, e.g. ["model.init=he_normal"]
    explanation: str = ""     # the chapter's reasoning for the remedy
    layer: int | None = None
    epoch: int | None = None
    step: int | None = None
    alternatives: list[list[str]] = field(default_factory=list)
    follows_from: list[tuple[str, str]] = field(default_factory=list)   # (cause kind, how)

    @property
    def tier(self) -> int:
        return TIERS[self.kind]

    @property
    def severity(self) -> float:
        """How many decades past the threshold (0 when value or threshold is not positive)."""
        if self.value > 0 and self.threshold > 0 and math.isfinite(self.value):
            return abs(math.log10(self.value / self.threshold))
        return 10.0   # non-finite (a diverged loss) or exactly zero: as bad as it gets

    def set_args(self, items: list[str] | None = None) -> str:
        return " ".join(f"--set {s}" for s in (self.remedy if items is None else items))

    def evidence(self) -> str:
        where = []
        if self.layer is not None:
            where.append(f"layer {self.layer}")
        if self.epoch is not None:
            where.append(f"epoch {self.epoch}" + (f" (step {self.step})" if self.step else ""))
        at = f" at {', '.join(where)}" if where else ""
        return (f"{self.measure}{at} = {_num(self.value)} (threshold {_num(self.threshold)}: "
                f"{self.why})")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "title": self.title, "evidence": self.evidence(),
                "layer": self.layer, "epoch": self.epoch, "step": self.step,
                "value": self.value, "threshold": self.threshold, "remedy": self.remedy,
                "set": self.set_args(), "alternatives": [self.set_args(a) for a in self.alternatives],
                "explanation": self.explanation,
                "follows_from": [{"kind": k, "how": how} for k, how in self.follows_from]}


def _num(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


# --- helpers over the records -------------------------------------------------------------------
def epochs_recorded(records: list[dict[str, Any]]) -> list[int]:
    return sorted({r["epoch"] for r in records})


def hidden_at(records: list[dict[str, Any]], epoch: int) -> list[dict[str, Any]]:
    """The hidden layers' rows of one record, in layer order."""
    return sorted((r for r in records if r["epoch"] == epoch and not r["output"]),
                  key=lambda r: r["layer"])


def _last_hidden(records: list[dict[str, Any]]) -> tuple[int | None, list[dict[str, Any]]]:
    epochs = epochs_recorded(records)
    if not epochs:
        return None, []
    return epochs[-1], hidden_at(records, epochs[-1])


def matching_init(activation: str) -> str:
    return INIT_FOR.get(activation, "he_normal")


def _init_matches(cfg: RunConfig) -> bool:
    want = matching_init(cfg.model.activation).split("_")[0]       # glorot | he | lecun
    return cfg.model.init.split("_")[0] == want


def _bias_fix(cfg: RunConfig) -> tuple[list[str], str] | None:
    m = cfg.model
    if m.bias_init == "constant" and m.bias_value < 0:
        return (["model.bias_init=zeros"],
                f"the biases start at {m.bias_value:g}, which puts every pre-activation below 0 "
                "where ReLU outputs 0 and passes no gradient; zero biases are the safe default")
    return None


def _kernel_fix(cfg: RunConfig) -> tuple[list[str], str] | None:
    if _init_matches(cfg):
        return None
    want, act = matching_init(cfg.model.activation), cfg.model.activation
    return ([f"model.init={want}"], f"{want} is the init that keeps the variance of the signal "
            f"equal across layers for {act} (Glorot/He/LeCun)")


def init_fix(cfg: RunConfig) -> tuple[list[str], str] | None:
    """The set-up change that restores a healthy start (biases that start negative, a kernel
    init that does not keep the signal's variance for the activation), or None when it is sound."""
    fixes = [f for f in (_bias_fix(cfg), _kernel_fix(cfg)) if f is not None]
    if not fixes:
        return None
    return [s for items, _ in fixes for s in items], "; ".join(why for _, why in fixes)


def _signal_remedy(cfg: RunConfig) -> tuple[list[str], list[list[str]], str]:
    """The chapter's fixes for unstable gradients, most specific first."""
    m = cfg.model
    alternatives = [["model.batch_norm=before"], ["optim.clip_norm=1.0"]]
    if m.activation in SATURATING:
        return (["model.activation=elu", "model.init=he_normal"],
                [[f"model.init={matching_init(m.activation)}"]] + alternatives,
                "a nonsaturating activation with He init keeps the gradient's scale through depth "
                "(sigmoid's derivative is at most 0.25, so each layer shrinks it)")
    fix = _kernel_fix(cfg)
    if fix is not None:
        return fix[0], alternatives, fix[1]
    if m.batch_norm == "none":
        return (["model.batch_norm=before"], [["optim.clip_norm=1.0"]],
                "batch normalization re-centres and re-scales every layer's inputs")
    return (["optim.clip_norm=1.0"], [], "gradient clipping caps the step an exploding gradient causes")


def _useful(alternatives: list[list[str]], cfg: RunConfig) -> list[list[str]]:
    """Drop suggestions the config already follows (``model.init=glorot_normal`` when it is)."""
    raw = cfg.to_dict()

    def current(key: str) -> Any:
        node = raw
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    return [alt for alt in alternatives
            if any(str(current(k)).lower() != v.lower() for k, v in (s.split("=", 1) for s in alt))]


# --- the checks (pure functions) ----------------------------------------------------------------
def gradient_ratio(hidden: list[dict[str, Any]]) -> float | None:
    """First hidden layer's back-propagated signal over the last hidden layer's (None if unknown)."""
    if len(hidden) < 2:
        return None
    first, last = hidden[0]["out_grad_rms"], hidden[-1]["out_grad_rms"]
    if first is None or last is None or math.isnan(first) or math.isnan(last):
        return None
    if first == 0 or last == 0:
        return None    # a layer that passes no signal at all is dead or saturated: those checks say so
    return float(first / last)


def check_unstable_gradients(records: list[dict[str, Any]], cfg: RunConfig) -> Diagnosis | None:
    """Vanishing or exploding gradients at the latest record (what the net is like now)."""
    epoch, hidden = _last_hidden(records)
    ratio = gradient_ratio(hidden)
    if ratio is None or VANISHING_RATIO <= ratio <= EXPLODING_RATIO:
        return None
    remedy, alts, why = _signal_remedy(cfg)
    vanishing = ratio < VANISHING_RATIO
    n = len(hidden)
    return Diagnosis(
        kind="vanishing_gradients" if vanishing else "exploding_gradients",
        title=("Vanishing gradients: the lower layers hardly learn" if vanishing else
               "Exploding gradients: the lower layers get huge updates"),
        measure=f"gradient RMS of hidden layer 1 / hidden layer {n}",
        value=ratio, threshold=VANISHING_RATIO if vanishing else EXPLODING_RATIO,
        why="a factor of 100 across the stack means the layers learn at rates 100x apart",
        remedy=remedy, alternatives=_useful(alts, cfg), explanation=why, layer=1, epoch=epoch,
        step=hidden[0]["step"])


def check_dead_units(records: list[dict[str, Any]], cfg: RunConfig) -> Diagnosis | None:
    epoch, hidden = _last_hidden(records)
    if not hidden:
        return None
    worst = max(hidden, key=lambda r: r["dead_frac"])
    if worst["dead_frac"] < DEAD_FRACTION:
        return None
    fix = _bias_fix(cfg)
    if fix is not None:
        remedy, why = fix
        alts = [["model.activation=leaky_relu"]]
    else:
        remedy = ["model.activation=leaky_relu"]
        why = ("a leaky ReLU (or ELU/SELU) has a nonzero slope for negative inputs, so a unit "
               "pushed below 0 can come back; a lower learning rate also helps")
        alts = [["model.activation=elu"], [f"optim.lr={cfg.optim.lr / 10:.1g}"]]
    return Diagnosis(
        kind="dead_units", title="Dead units: ReLUs that output 0 for every input",
        measure="fraction of units that output 0 on every probe image", value=worst["dead_frac"],
        threshold=DEAD_FRACTION, why="the book's 'half of your network's neurons are dead'; "
        "healthy ReLU nets keep under 15% per layer", remedy=remedy, alternatives=alts,
        explanation=why, layer=worst["layer"], epoch=epoch, step=worst["step"])


def check_saturated_units(records: list[dict[str, Any]], cfg: RunConfig) -> Diagnosis | None:
    epoch, hidden = _last_hidden(records)
    if not hidden:
        return None
    worst = max(hidden, key=lambda r: r["saturated_frac"])
    m = cfg.model
    # Only sigmoid and tanh saturate on both sides, where the gradient vanishes whichever way a
    # unit is pushed: the chapter's saturation. ELU's and SELU's negative tail is their "off"
    # state, as ReLU's zero is: a trained 5x100 ELU net on MNIST (98.9% test accuracy) had half
    # its layer-5 outputs there. A unit that is off for every input is judged dead instead.
    if m.activation not in SATURATING or worst["saturated_frac"] < SATURATED_FRACTION:
        return None
    remedy = ["model.activation=elu", "model.init=he_normal"]
    alts = [["model.batch_norm=before"]]
    if not _init_matches(cfg):
        alts.insert(0, [f"model.init={matching_init(m.activation)}"])
    explanation = ("the chapter's answer to saturation: a nonsaturating activation (ELU, "
                   "leaky ReLU) with He init, or Glorot init and batch normalization")
    return Diagnosis(
        kind="saturated_units", title=f"Saturated units: {m.activation} outputs stuck in a flat tail",
        measure="share of outputs in the flat tails (derivative < 4% of its peak)",
        value=worst["saturated_frac"], threshold=SATURATED_FRACTION,
        why="Glorot-initialized sigmoid/tanh nets stay under 15%; saturated outputs pass almost "
        "no gradient", remedy=remedy, alternatives=_useful(alts, cfg),
        explanation=explanation, layer=worst["layer"], epoch=epoch, step=worst["step"])


def settle_layer(means: list[float], stds: list[float], tol: float = SELF_NORM_TOL) -> int | None:
    """First layer (1-based) from which every later layer has |mean| <= tol and |std - 1| <= tol."""
    ok = [abs(m) <= tol and abs(s - 1) <= tol for m, s in zip(means, stds)]
    for i in range(len(ok)):
        if all(ok[i:]):
            return i + 1
    return None


def self_normalizes(means: list[float], stds: list[float]) -> bool:
    """The judgement: the stack settles at SELU's fixed point within its first third."""
    at = settle_layer(means, stds)
    return at is not None and at <= max(1, int(len(means) * SELF_NORM_SETTLE_FRACTION))


def check_self_normalization(records: list[dict[str, Any]], cfg: RunConfig) -> Diagnosis | None:
    """SELU nets only: does the stack sit at the fixed point at the first record (the setup)?

    Judged at initialization because that is what the chapter's conditions (standardized inputs,
    LeCun init, plain dense stack, no plain dropout) guarantee; training moves any net off it.
    """
    if cfg.model.activation != "selu":
        return None
    epochs = epochs_recorded(records)
    if not epochs:
        return None
    hidden = hidden_at(records, epochs[0])
    if len(hidden) < 2:
        return None
    means, stds = [r["act_mean"] for r in hidden], [r["act_std"] for r in hidden]
    if self_normalizes(means, stds):
        return None
    m, d = cfg.model, cfg.data
    causes: list[str] = []
    if not d.standardize and not m.input_batch_norm:
        causes.append("data.standardize=true")
    if m.init != "lecun_normal":
        causes.append("model.init=lecun_normal")
    if (m.dropout > 0 or m.input_dropout > 0) and m.dropout_kind != "alpha":
        causes.append("model.dropout_kind=alpha")
    if m.batch_norm != "none":
        causes.append("model.batch_norm=none")
    if m.l1 > 0:
        causes.append("model.l1=0")
    worst = max(range(len(hidden)), key=lambda i: max(abs(means[i]), abs(stds[i] - 1)))
    off = max(abs(means[worst]), abs(stds[worst] - 1))
    at = settle_layer(means, stds)
    return Diagnosis(
        kind="broken_self_normalization",
        title="Broken self-normalization: the SELU net is off mean 0 / std 1",
        measure=(f"largest distance from mean 0 / std 1 (mean {means[worst]:+.2f}, std "
                 f"{stds[worst]:.2f}; {'settles at layer ' + str(at) if at else 'never settles'})"),
        value=off, threshold=SELF_NORM_TOL,
        why="the band SELU's fixed point is held to; every layer from the first third on must "
        "stay inside it", remedy=causes or ["model.init=lecun_normal"],
        explanation="SELU self-normalizes only with standardized inputs, LeCun normal init, a "
        "plain dense stack and alpha dropout (not plain dropout), without l1", layer=worst + 1,
        epoch=epochs[0], step=hidden[worst]["step"])


def _lr_remedy(cfg: RunConfig, factor: float) -> list[str]:
    return [f"optim.lr={cfg.optim.lr * factor:.1g}"]


def max_update_ratio(hidden: list[dict[str, Any]]) -> float | None:
    values = [r["update_ratio"] for r in hidden if not math.isnan(r["update_ratio"])]
    return max(values) if values else None


def check_learning_rate_too_high(records: list[dict[str, Any]], history: dict[str, Any], cfg: RunConfig,
                                 status: str = "completed", message: str = "") -> Diagnosis | None:
    lr = cfg.optim.lr
    alts = [["optim.clip_norm=1.0"], ["optim.schedule.name=1cycle"]]
    why = "steps that overshoot the minimum; run 'dnnlab lr-find' to pick the rate"
    if status in ("diverged", "failed"):
        return Diagnosis(
            kind="learning_rate_too_high", title="The loss diverged (became NaN or infinite)",
            measure="final loss", value=math.inf, threshold=math.inf,
            why=message or "training stopped on a non-finite loss",
            remedy=_lr_remedy(cfg, 0.1), alternatives=alts, explanation=why)
    for epoch in epochs_recorded(records):
        hidden = hidden_at(records, epoch)
        top = max_update_ratio(hidden)
        if top is not None and top > UPDATE_HIGH:
            layer = max((r for r in hidden if not math.isnan(r["update_ratio"])),
                        key=lambda r: r["update_ratio"])
            factor = min(0.1, UPDATE_TARGET / top)
            return Diagnosis(
                kind="learning_rate_too_high", title="Learning rate too high: the weights jump",
                measure="update-to-weight ratio per step", value=top, threshold=UPDATE_HIGH,
                why="above it the weights are replaced within ~30 steps; healthy runs measure "
                "3e-4 to 3e-3", remedy=_lr_remedy(cfg, factor), alternatives=alts,
                explanation=f"lr {lr:g} x {factor:.2g} aims the fastest layer at "
                f"{UPDATE_TARGET:g} per step; " + why, layer=layer["layer"], epoch=epoch,
                step=layer["step"])
    losses = [v for v in history.get("loss", []) if not math.isnan(v)]
    if len(losses) >= OSCILLATION_MIN_EPOCHS:
        rises = sum(b > a * (1 + OSCILLATION_RISE) for a, b in zip(losses, losses[1:]))
        share = rises / (len(losses) - 1)
        if share >= OSCILLATION_SHARE:
            return Diagnosis(
                kind="learning_rate_too_high", title="Learning rate too high: the loss oscillates",
                measure="share of epochs in which the training loss rose", value=share,
                threshold=OSCILLATION_SHARE, why="a training loss that rises as often as it falls "
                "is bouncing around the minimum", remedy=_lr_remedy(cfg, 0.1),
                alternatives=alts, explanation=why, epoch=len(losses))
    return None


def check_learning_rate_too_low(records: list[dict[str, Any]], history: dict[str, Any],
                                cfg: RunConfig) -> Diagnosis | None:
    losses = [v for v in history.get("loss", []) if not math.isnan(v)]
    trained = [e for e in epochs_recorded(records) if e > 0]
    if not losses or not trained:
        return None
    hidden = hidden_at(records, trained[-1])
    top = max_update_ratio(hidden)
    if top is None or top >= UPDATE_LOW or top == 0:
        return None     # 0: nothing moves at all, which dead units or a frozen net explain
    drop = (losses[0] - losses[-1]) / losses[0] if losses[0] > 0 else 0.0
    if drop >= LOW_LOSS_DROP:
        return None
    factor = min(1000.0, UPDATE_TARGET / top)
    return Diagnosis(
        kind="learning_rate_too_low", title="Learning rate too low: the weights barely move",
        measure="largest update-to-weight ratio per step over the hidden layers", value=top,
        threshold=UPDATE_LOW, why=f"a thousand steps move even the fastest layer by under 1%; "
        f"the training loss fell by only {drop:.0%} (under {LOW_LOSS_DROP:.0%})",
        remedy=_lr_remedy(cfg, factor), alternatives=[["optim.schedule.name=1cycle"]],
        explanation=f"lr {cfg.optim.lr:g} x {factor:.3g} aims the fastest layer at "
        f"{UPDATE_TARGET:g} per step; 'dnnlab lr-find' confirms it", epoch=trained[-1],
        step=hidden[0]["step"] if hidden else None)


def check_overfitting(history: dict[str, Any], cfg: RunConfig) -> Diagnosis | None:
    val = history.get("val_loss", [])
    train = history.get("loss", [])
    epochs = history.get("epoch", list(range(1, len(val) + 1)))
    pairs = [(int(e), t, v) for e, t, v in zip(epochs, train, val)
             if not (math.isnan(v) or math.isnan(t))]
    if len(pairs) < OVERFIT_EPOCHS_PAST + 1:
        return None
    best = min(range(len(pairs)), key=lambda i: pairs[i][2])
    e_best, t_best, v_best = pairs[best]
    e_last, t_last, v_last = pairs[-1]
    past = len(pairs) - 1 - best
    rise = (v_last - v_best) / v_best if v_best > 0 else 0.0
    if past < OVERFIT_EPOCHS_PAST or rise < OVERFIT_RISE or t_last >= t_best:
        return None
    m, t = cfg.model, cfg.train
    if t.patience is None:
        remedy = ["train.patience=3"]
        explanation = ("early stopping (with the best weights restored) ends training near the "
                       "validation minimum")
    elif m.dropout == 0:
        remedy = ["model.dropout=0.5"]
        explanation = "dropout regularizes: every unit must be useful without its neighbours"
    else:
        remedy = [f"model.l2={max(m.l2 * 10, 1e-4):.1g}"]
        explanation = "an l2 penalty keeps the weights small"
    more_data = [["data.limit=none"]] if cfg.data.limit is not None else []   # only a cap to lift
    alts = [a for a in (["model.dropout=0.5"], ["model.l2=1e-4"], *more_data) if a != remedy]
    return Diagnosis(
        kind="overfitting", title="Overfitting: validation loss rises while training loss falls",
        measure=(f"validation loss rise since its minimum at epoch {e_best} ({_num(v_best)} -> "
                 f"{_num(v_last)}, {past} epochs on; training loss {_num(t_best)} -> {_num(t_last)})"),
        value=rise, threshold=OVERFIT_RISE,
        why=f"beyond validation noise (2-5%), held for at least {OVERFIT_EPOCHS_PAST} epochs",
        remedy=remedy, alternatives=alts, explanation=explanation, epoch=e_last)


# --- causes and symptoms -------------------------------------------------------------------------
SIGNAL_CHECKS = (check_unstable_gradients, check_dead_units, check_saturated_units)


def at_initialization(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The epoch-0 record (the net before its first step); empty when recording began later."""
    epochs = epochs_recorded(records)
    return [r for r in records if r["epoch"] == 0] if epochs and epochs[0] == 0 else []


def findings_at_init(records: list[dict[str, Any]], cfg: RunConfig) -> list[Diagnosis] | None:
    """The signal findings the epoch-0 record already shows (None: no such record)."""
    first = at_initialization(records)
    if not first:
        return None
    return [f for f in (c(first, cfg) for c in SIGNAL_CHECKS) if f is not None]


def check_initialization(records: list[dict[str, Any]], cfg: RunConfig) -> Diagnosis | None:
    """The set-up itself: the net is broken before its first step (a signal finding in the
    epoch-0 record) and its init does not suit its activation (or its biases start negative).

    Judged at initialization because no learning rate acts there: what the epoch-0 record shows
    is the init's doing, and every later symptom it started follows from it (see EXPLAINS).
    """
    fix = init_fix(cfg)
    found = findings_at_init(records, cfg) if fix is not None else None
    if not found:
        return None
    assert fix is not None                 # found is None without a fix
    worst = max(found, key=lambda f: f.severity)
    return Diagnosis(
        kind="bad_initialization", title="Bad initialization: the net is broken before its first step",
        measure=f"at initialization, {worst.measure}", value=worst.value, threshold=worst.threshold,
        why=worst.why, remedy=fix[0], explanation=fix[1], layer=worst.layer, epoch=0,
        step=worst.step)


@dataclass(frozen=True)
class Explains:
    """``cause`` explains ``symptom`` when both are found and ``when`` holds (see CONDITIONS);
    ``how`` completes the sentence "follows from <cause>: ..."."""
    cause: str
    symptom: str
    when: str
    how: str


# Conditions on the symptom, pure functions of (symptom kind, the kinds found in the epoch-0
# record, None when there is none). "since_init": it was in the epoch-0 record, before any step
# (the set-up's doing); "during_training": the epoch-0 record exists and did not have it (it
# developed as the weights moved).
CONDITIONS: dict[str, Callable[[str, Any], bool]] = {
    "always": lambda kind, at_init: True,
    "since_init": lambda kind, at_init: at_init is not None and kind in at_init,
    "during_training": lambda kind, at_init: at_init is not None and kind not in at_init,
}

_LR_GREW = "oversized steps moved the weights there during training (the epoch-0 record was healthy)"
EXPLAINS: tuple[Explains, ...] = (
    Explains("bad_initialization", "vanishing_gradients", "since_init",
             "an init whose variance does not suit the activation scales the signal by the same "
             "factor at every layer, so the gradient shrinks geometrically with depth"),
    Explains("bad_initialization", "exploding_gradients", "since_init",
             "an init whose variance does not suit the activation scales the signal by the same "
             "factor at every layer, so the gradient grows geometrically with depth"),
    Explains("bad_initialization", "dead_units", "since_init",
             "units whose every pre-activation starts below 0 output 0 and get no gradient to recover"),
    Explains("bad_initialization", "saturated_units", "since_init",
             "weights too large put the units' inputs in the flat tails before the first step"),
    Explains("learning_rate_too_high", "saturated_units", "during_training",
             "overshooting steps pushed the units' inputs into the flat tails; " + _LR_GREW),
    Explains("learning_rate_too_high", "dead_units", "during_training",
             "an overshooting step can push a ReLU's inputs below 0 for every example, where no "
             "gradient brings it back; " + _LR_GREW),
    Explains("learning_rate_too_high", "vanishing_gradients", "during_training",
             "the gradient shrank as " + _LR_GREW),
    Explains("learning_rate_too_high", "exploding_gradients", "during_training",
             "the gradient grew as " + _LR_GREW),
    Explains("saturated_units", "vanishing_gradients", "always",
             "a saturated sigmoid/tanh unit passes under 4% of its peak derivative, so every "
             "saturated layer shrinks the gradient on its way down"),
    Explains("dead_units", "vanishing_gradients", "always",
             "a dead unit passes no gradient down, so the layers below it receive less"),
)


def link_causes(found: list[Diagnosis], records: list[dict[str, Any]], cfg: RunConfig) -> list[Diagnosis]:
    """Set each finding's ``follows_from`` from EXPLAINS, then order causes before their
    symptoms, keeping ``found``'s order (tier, then severity) wherever the relation is silent."""
    by_kind = {f.kind: f for f in found}
    initial = findings_at_init(records, cfg)       # judged once, not once per rule
    at_init = None if initial is None else {f.kind for f in initial}
    for rule in EXPLAINS:
        cause, symptom = by_kind.get(rule.cause), by_kind.get(rule.symptom)
        if cause is not None and symptom is not None and CONDITIONS[rule.when](rule.symptom, at_init):
            symptom.follows_from.append((rule.cause, rule.how))
    ordered: list[Diagnosis] = []
    waiting = list(found)
    while waiting:     # the relation is acyclic (a test checks it): each pass places one finding
        ready = next(f for f in waiting
                     if all(by_kind[c] in ordered for c, _ in f.follows_from))
        ordered.append(ready)
        waiting.remove(ready)
    return ordered


def diagnose(records: list[dict[str, Any]], history: dict[str, Any], cfg: RunConfig,
             status: str = "completed", message: str = "") -> list[Diagnosis]:
    """Every finding, ranked: tier (set-up, signal, units, learning rate, generalization), then
    severity, with every cause moved above the symptoms it explains (EXPLAINS). An empty list
    means no finding."""
    found = [check_initialization(records, cfg), check_unstable_gradients(records, cfg),
             check_dead_units(records, cfg), check_saturated_units(records, cfg),
             check_self_normalization(records, cfg),
             check_learning_rate_too_high(records, history, cfg, status, message),
             check_learning_rate_too_low(records, history, cfg), check_overfitting(history, cfg)]
    ranked = sorted((f for f in found if f is not None), key=lambda f: (f.tier, -f.severity))
    return link_causes(ranked, records, cfg)
