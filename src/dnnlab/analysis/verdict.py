"""Answers as claims: one rule from per-seed measurements to supported / refuted / not settled.

Every answer the lab prints (an explain topic, a study's answer, a sweep's note) is a
:class:`Verdict`: a claim in words, the per-seed values it stands on, the test that decided it
(:func:`dnnlab.analysis.stats.compare`, the lab's one noise rule, paired where the seeds pair),
the effect with its 95% interval and exactly one of three outcomes. The published answers it is
checked against (sources 000-004) are attached to the claim as asserting or denying it, so what a
verdict confirms or refutes follows from its outcome alone, and "not settled" confirms and
refutes nothing.

Three ways to judge, one per kind of claim:

* :func:`differs`: "a is larger (smaller) than b": supported when compare calls the difference
  beyond seed noise in the claimed direction, refuted when it is beyond noise the other way or
  when its whole interval lies below ``margin`` (a noise floor measured in the same run: the
  effect, if any, is smaller than what the run can tell from noise); else not settled.
* :func:`same`: "a and b do not differ": supported when the difference's whole interval lies
  within +-``margin`` (the measured noise floor), refuted when compare calls it beyond noise and
  it is larger than the margin; else not settled.
* :func:`every_seed`: a yes/no property each seed measures without noise of its own (an eval
  pass is deterministic, a softmax row sums to 1): supported when every seed says yes, refuted
  when every seed says no, not settled when they disagree.

Each needs :data:`MIN_SEEDS` seeds: fewer is "not settled", whatever the numbers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dnnlab.analysis.stats import compare, difference_interval

SUPPORTED, REFUTED, NOT_SETTLED = "supported", "refuted", "not settled"
OUTCOMES = (SUPPORTED, REFUTED, NOT_SETTLED)
ROW_COLUMNS = ("claim", "outcome", "effect [95% interval]", "test", "p", "confirms", "refutes")
EVERY_SEED = "every seed must agree"
MIN_SEEDS = 3   # no verdict from fewer seeds (2 give a t-test with 1 degree of freedom)


@dataclass(frozen=True)
class Verdict:
    """One claim judged by measurement (see the module docstring).

    ``evidence`` maps each side's name to its per-seed values (one list per side, in seed order;
    a side may be a constant the claim is tested against). ``effect`` is mean(a) - mean(b) (for
    a paired test, the mean of the per-seed differences) and ``interval`` its 95% confidence
    interval; ``margin`` the noise floor the claim was judged against, when it has one.
    ``asserted_by`` are the published answers that make this claim, ``denied_by`` those that
    make the opposite one; ``note`` says what the reader must know (a setting the claim needed).
    """
    claim: str
    outcome: str
    test: str
    evidence: dict[str, list[float | None]] = field(default_factory=dict)
    effect: float | None = None
    interval: tuple[float, float] | None = None
    p: float | None = None
    margin: float | None = None
    unit: str = ""
    scale: float = 1.0
    asserted_by: tuple[str, ...] = ()
    denied_by: tuple[str, ...] = ()
    note: str = ""
    samples: str = "seeds"          # what the evidence's values are: seeds, or timing repeats

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"Verdict outcome {self.outcome!r}; one of {', '.join(OUTCOMES)}")

    @property
    def confirms(self) -> list[str]:
        """The sources this verdict confirms: follows from the outcome alone."""
        return list(self.asserted_by if self.outcome == SUPPORTED else
                    self.denied_by if self.outcome == REFUTED else ())

    @property
    def refutes(self) -> list[str]:
        return list(self.denied_by if self.outcome == SUPPORTED else
                    self.asserted_by if self.outcome == REFUTED else ())

    @property
    def seeds(self) -> int:
        return max((len(v) for v in self.evidence.values()), default=0)

    def _num(self, x: float) -> str:
        v = x * self.scale
        return f"{v:+.3g}" if abs(v) < 1e4 else f"{v:+.2e}"

    def numbers(self) -> str:
        """The effect, its interval and the test, in words: ``+3.8 pts [+2.1, +5.5], paired t
        over 3 seeds, p = 0.004``."""
        unit = f" {self.unit}" if self.unit else ""
        parts = []
        if self.test == EVERY_SEED:
            held = [x for v in self.evidence.values() for x in v if x]
            return f"held at {len(held)} of {self.seeds} {self.samples}, {EVERY_SEED}"
        if self.effect is not None:
            parts.append(self.effect_text())
        parts.append(f"{self.test} over {self.seeds} {self.samples}")
        if self.p is not None:
            parts.append(f"p = {self.p:.2g}")
        if self.margin is not None:
            parts.append(f"noise floor ±{abs(self.margin * self.scale):.3g}{unit}")
        return ", ".join(parts)

    def effect_text(self) -> str:
        """``+3.8 pts [+2.1, +5.5]``: the effect and its 95% interval ("held at 3 of 3 seeds" for
        :func:`every_seed`); a dash without an effect."""
        if self.test == EVERY_SEED:
            return self.numbers().split(", ")[0]
        if self.effect is None:
            return "–"
        unit = f" {self.unit}" if self.unit else ""
        ci = (f" [{self._num(self.interval[0])}, {self._num(self.interval[1])}]"
              if self.interval else "")
        return f"{self._num(self.effect)}{unit}{ci}"

    def sentence(self) -> str:
        """``Supported: <claim> (<numbers>)``: how the terminal and the report print it."""
        note = f"; {self.note}" if self.note else ""
        return f"{self.outcome.capitalize()}: {self.claim} ({self.numbers()}{note})"

    def row(self) -> dict[str, str]:
        """The verdict as a report row (columns :data:`ROW_COLUMNS`): every report shows its
        verdicts the same way."""
        return {"claim": self.claim + (f" ({self.note})" if self.note else ""),
                "outcome": self.outcome, "effect [95% interval]": self.effect_text(),
                "test": f"{self.test}, {self.seeds} {self.samples}",
                "p": "–" if self.p is None else f"{self.p:.2g}",
                "confirms": ", ".join(c.split(" (")[0] for c in self.confirms) or "–",
                "refutes": ", ".join(c.split(" (")[0] for c in self.refutes) or "–"}

    def to_json(self) -> dict[str, Any]:
        return {"claim": self.claim, "outcome": self.outcome, "test": self.test,
                "evidence": {k: [x if x is None or math.isfinite(x) else None for x in v]
                             for k, v in self.evidence.items()},   # JSON holds no NaN or inf
                "effect": self.effect, "interval": list(self.interval) if self.interval else None,
                "p": self.p, "margin": self.margin, "unit": self.unit, "scale": self.scale,
                "asserted_by": list(self.asserted_by), "denied_by": list(self.denied_by),
                "note": self.note, "samples": self.samples, "confirms": self.confirms,
                "refutes": self.refutes}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Verdict:
        return cls(claim=d["claim"], outcome=d["outcome"], test=d["test"],
                   evidence=dict(d.get("evidence", {})), effect=d.get("effect"),
                   interval=tuple(d["interval"]) if d.get("interval") else None,  # type: ignore[arg-type]
                   p=d.get("p"), margin=d.get("margin"), unit=d.get("unit", ""),
                   scale=d.get("scale", 1.0), asserted_by=tuple(d.get("asserted_by", ())),
                   denied_by=tuple(d.get("denied_by", ())), note=d.get("note", ""),
                   samples=d.get("samples", "seeds"))


def _sides(a, b) -> tuple[list[float | None], list[float | None], bool]:
    """Both sides as per-seed lists; a plain number is a constant the other side is tested
    against (then True: the test is the one-sample t on the differences)."""
    const_a, const_b = isinstance(a, (int, float)), isinstance(b, (int, float))
    if const_a and const_b:
        raise ValueError("a verdict needs per-seed values on at least one side")
    av = [] if const_a else [None if x is None else float(x) for x in a]
    bv = [] if const_b else [None if x is None else float(x) for x in b]
    n = len(bv) if const_a else len(av)
    return ([float(a)] * n if const_a else av), ([float(b)] * n if const_b else bv), \
        const_a or const_b


def _n(a: Sequence[float | None]) -> int:
    return sum(1 for x in a if x is not None and math.isfinite(x))


def _judged(a, b, paired: bool, names: tuple[str, str]) -> dict[str, Any]:
    av, bv, constant = _sides(a, b)
    paired = paired or constant
    c = compare(av, bv, paired=paired)
    lo, hi = difference_interval(av, bv, paired=paired)
    return {"c": c, "interval": (lo, hi) if lo is not None and hi is not None else None,
            "test": "one-sample t" if constant else "paired t" if paired else "Welch's t",
            "enough": min(_n(av), _n(bv)) >= MIN_SEEDS, "evidence": {names[0]: av, names[1]: bv}}


def _make(claim: str, outcome: str, j: dict[str, Any], margin: float | None, **kw) -> Verdict:
    return Verdict(claim=claim, outcome=outcome, test=j["test"], evidence=j["evidence"],
                   effect=j["c"]["difference"], interval=j["interval"], p=j["c"]["p"],
                   margin=margin, **kw)


def differs(claim: str, a, b, *, larger: bool = True, paired: bool = False,
            margin: float | None = None, names: tuple[str, str] = ("a", "b"), **kw) -> Verdict:
    """The claim "``a`` is larger than ``b``" (``larger=False``: smaller), judged over seeds.

    ``a`` and ``b`` are per-seed values (``paired``: ``a[i]`` and ``b[i]`` share seed ``i``); one
    of them may be a number, which the other is tested against (one-sample t). ``margin`` (>= 0,
    a noise floor measured in the same run) lets the claim be refuted when the interval says
    the effect, if any, is smaller than the floor. ``kw``: the :class:`Verdict`'s other fields
    (``asserted_by``, ``denied_by``, ``unit``, ``scale``, ``note``).
    """
    j = _judged(a, b, paired, names)
    c, iv = j["c"], j["interval"]
    sign = 1.0 if larger else -1.0
    outcome = NOT_SETTLED
    if j["enough"] and c["beyond_noise"] is not None:
        if c["beyond_noise"] and sign * c["difference"] > 0:
            outcome = SUPPORTED
        elif c["beyond_noise"] and sign * c["difference"] < 0:
            outcome = REFUTED
        elif margin is not None and iv is not None and max(sign * iv[0], sign * iv[1]) < abs(margin):
            outcome = REFUTED
    return _make(claim, outcome, j, margin, **kw)


def same(claim: str, a, b, *, margin: float, paired: bool = False,
         names: tuple[str, str] = ("a", "b"), **kw) -> Verdict:
    """The claim "``a`` and ``b`` do not differ" (within ``margin``, a noise floor measured in the
    same run, e.g. :func:`spread`), judged over seeds (see :func:`differs` for the arguments)."""
    j = _judged(a, b, paired, names)
    c, iv = j["c"], j["interval"]
    m = abs(margin)
    outcome = NOT_SETTLED
    if j["enough"] and c["beyond_noise"] is not None:
        if c["beyond_noise"] and abs(c["difference"]) > m:
            outcome = REFUTED
        elif iv is not None and -m <= iv[0] and iv[1] <= m:
            outcome = SUPPORTED
    return _make(claim, outcome, j, margin, **kw)


def every_seed(claim: str, flags: Iterable[bool | None], *, name: str = "holds",
               **kw) -> Verdict:
    """A yes/no property each seed measures exactly: supported when all of at least
    :data:`MIN_SEEDS` seeds say yes, refuted when all say no, else not settled."""
    f = [None if x is None else bool(x) for x in flags]
    known = [x for x in f if x is not None]
    outcome = NOT_SETTLED
    if len(known) >= MIN_SEEDS and len(known) == len(f):
        outcome = SUPPORTED if all(known) else REFUTED if not any(known) else NOT_SETTLED
    share = sum(known) / len(known) if known else None
    return Verdict(claim=claim, outcome=outcome, test=EVERY_SEED,
                   evidence={name: [None if x is None else float(x) for x in f]},
                   effect=share, **kw)


def spread(values: Iterable[float | None]) -> float:
    """The seed-to-seed standard deviation of ``values``: the noise floor of :func:`same` when
    two sides are compared in the units of one of them (0.0 under two finite values)."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return statistics.stdev(v) if len(v) > 1 else 0.0


def sources(verdicts: Iterable[Verdict]) -> tuple[list[str], list[str]]:
    """(confirms, refutes) of several verdicts, in order, each source once."""
    confirms: list[str] = []
    refutes: list[str] = []
    for v in verdicts:
        confirms += [s for s in v.confirms if s not in confirms]
        refutes += [s for s in v.refutes if s not in refutes]
    return confirms, refutes


def headline(verdicts: Sequence[Verdict]) -> str:
    """The outcome of several verdicts of one answer, as one word: the common outcome, or
    "mixed"."""
    outcomes = {v.outcome for v in verdicts}
    return outcomes.pop() if len(outcomes) == 1 else "mixed"


__all__ = ["MIN_SEEDS", "NOT_SETTLED", "OUTCOMES", "REFUTED", "ROW_COLUMNS", "SUPPORTED",
           "Verdict", "differs", "every_seed", "headline", "same", "sources", "spread"]
