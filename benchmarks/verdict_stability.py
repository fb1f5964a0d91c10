"""How stable are the lab's verdicts? Every explain topic (quick) and the ablation study's answers
(quick, on the README's example config) at N independent seeds: per verdict, how many seeds gave
each outcome.

Each explain topic already stands on 3 seeds (its runner measures seeds s, s+1, s+2); here that
whole answer is repeated at base seeds 0, 10, 20, ... so that no two repetitions share a seed.
The ablation study is repeated the same way (its final runs train seeds s, s+1, s+2; the
learning-rate searches are seed 0 as always). The goal the issue sets: no verdict supported at
one seed and refuted at another, and every verdict the same outcome at 9 of 10 seeds or more.

    python benchmarks/verdict_stability.py --seeds 10                 # everything (CPU: long)
    python benchmarks/verdict_stability.py --seeds 3 --topics symmetry,bias-init
    python benchmarks/verdict_stability.py --topics ablation --seeds 5

Prints a markdown table (the one in benchmarks/README.md) and writes every outcome to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import choose, cpu_model  # noqa: E402

STRIDE = 10                 # base seeds 0, 10, 20, ...: repetitions share no seed
ABLATION = "ablation"
EXAMPLE = ROOT / "examples" / "mnist_5x100.toml"
OUTCOMES = ("supported", "refuted", "not settled")


def explain_verdicts(topic: str, seed: int, out: Path) -> list[tuple[str, str]]:
    """(claim, outcome) of each verdict of ``topic`` (quick) at base seed ``seed``."""
    from dnnlab.studies.explain import run_topic
    finding = run_topic(topic, out, quick=True, seed=seed)
    return [(v.claim, v.outcome) for v in finding.verdicts]


def ablation_verdicts(seed: int, out: Path) -> list[tuple[str, str]]:
    """(claim, outcome) of each verdict of the ablation study's answers (quick) at ``seed``."""
    from dnnlab.studies.ablation import command
    results = command.run(EXAMPLE, out, quick=True, progress=False, first_seed=seed, workers=1)
    pairs = []
    for key in ("batchnorm", "mc_dropout"):
        for v in results["answers"][key].get("verdicts", []):
            pairs.append((f"({key}) {v['claim']}", v["outcome"]))
    for name in ("batchnorm", "selu", "alpha_dropout", "one_cycle"):      # the table's column
        c = results.get(name, {}).get("val_vs_baseline") or {}
        outcome = ("not settled" if not c.get("beyond_noise") else
                   "supported" if c["difference"] > 0 else "refuted")
        pairs.append((f"(table) {name} beats the baseline (val accuracy, Welch)", outcome))
    return pairs


def table(counts: dict[tuple[str, str], Counter], n: int) -> str:
    """The markdown table: one row per verdict, its outcomes' counts and whether it meets the goal."""
    lines = ["| topic | verdict | supported | refuted | not settled | same outcome | goal |",
             "|---|---|---|---|---|---|---|"]
    for (topic, claim), c in counts.items():
        top = max(c.values())
        flip = c["supported"] and c["refuted"]
        ok = not flip and top >= 0.9 * n
        short = claim if len(claim) <= 90 else claim[:87] + "..."
        lines.append(f"| {topic} | {short} | {c['supported']} | {c['refuted']} | "
                     f"{c['not settled']} | {top}/{n} | "
                     f"{'ok' if ok else 'FLIPS' if flip else 'unstable'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from dnnlab.studies.explain import TOPICS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10, help="repetitions per topic (default 10)")
    p.add_argument("--topics", default=",".join((*TOPICS, ABLATION)),
                   help=f"comma list of: {', '.join((*TOPICS, ABLATION))} (default: all)")
    p.add_argument("--json", type=Path, help="write every outcome here")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    topics = choose(p, args.topics, (*TOPICS, ABLATION), "topic")
    os.environ.setdefault("MPLBACKEND", "Agg")
    counts: dict[tuple[str, str], Counter] = {}
    raw: dict[str, list] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for topic in topics:
            for k in range(args.seeds):
                seed = k * STRIDE
                t = time.perf_counter()
                out = Path(tmp) / f"{topic}-{seed}"
                pairs = (ablation_verdicts(seed, out) if topic == ABLATION
                         else explain_verdicts(topic, seed, out))
                raw.setdefault(topic, []).append({"seed": seed, "verdicts": pairs})
                for i, (claim, outcome) in enumerate(pairs):
                    # a verdict is identified by its place in the answer (its wording may carry
                    # a seed's own numbers, e.g. which activation was best)
                    key = (topic, f"#{i + 1} {claim}") if topic != ABLATION else (topic, claim)
                    same = next((k2 for k2 in counts if k2[0] == topic
                                 and k2[1].startswith(f"#{i + 1} ")), None) \
                        if topic != ABLATION else None
                    counts.setdefault(same or key, Counter())[outcome] += 1
                print(f"{topic} seed {seed}: {', '.join(o for _, o in pairs)} "
                      f"({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
    print(f"# verdict stability: {args.seeds} seeds, {cpu_model()}, "
          f"{time.perf_counter() - t0:.0f} s\n")
    print(table(counts, args.seeds))
    if args.json:
        args.json.write_text(json.dumps({"seeds": args.seeds, "runs": raw}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
