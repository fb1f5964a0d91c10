"""``dnnlab explain TOPIC|all``: the command-line face of :func:`run_topics` (parse, then call)."""

from __future__ import annotations

from pathlib import Path


def cmd_explain(args) -> int:
    from dnnlab.studies.explain import resolve, run_topics
    topics = resolve(args.topics)          # an unknown name fails here, before any work
    run_topics(topics, Path(args.out), quick=args.quick, seed=args.seed, progress=True)
    return 0


def register(sub, with_config) -> None:
    """Add the ``explain`` subcommand (``with_config`` is unused: topics build their own configs)."""
    from dnnlab.studies.explain import DEFAULT_OUT, TOPICS
    sp = sub.add_parser(
        "explain", help="settle one of the chapter's questions by experiment",
        description="Run the experiment that answers a question of the chapter, print the verdict "
                    "with its numbers, and write a plot, results.json and report.html. "
                    f"Topics: {', '.join(TOPICS)}, or all.")
    sp.add_argument("topics", nargs="+", metavar="TOPIC",
                    help=f"one or more of: {', '.join(TOPICS)}; or all")
    sp.add_argument("--out", default=str(DEFAULT_OUT),
                    help=f"output folder (default {DEFAULT_OUT})")
    sp.add_argument("--quick", action="store_true",
                    help="tiny settings (seconds per topic) that still show the verdict's direction")
    sp.add_argument("--seed", type=int, default=0, help="random seed of the experiments (default 0)")
    sp.set_defaults(func=cmd_explain)
