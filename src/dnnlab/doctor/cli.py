"""``dnnlab doctor RUN_DIR | CONFIG.toml``: the findings, their evidence, the remedies to paste.

One writer (:mod:`dnnlab.rundir`): a probe holds its run directory from its first file to the
report. Doctor of a RUN_DIR writes ``findings.json`` and ``doctor.html`` into the run, holding it,
or into ``--out``. While another process still trains the run, doctor neither waits nor refuses: a
user asks the doctor about a run precisely while it goes wrong, so the findings are printed as
always and the report goes to a folder of its own in the temporary folder (its path is printed),
leaving the run's files to the one process that writes them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dnnlab import rundir
from dnnlab.cli_common import dedicated_flags, with_flags, with_legacy, with_threads
from dnnlab.config import load_config, replace
from dnnlab.doctor.probe import probe_run
from dnnlab.doctor.report import Examination, examine, format_findings
from dnnlab.errors import DnnlabError
from dnnlab.runs import default_run_dir
from dnnlab.train.state import check_run

# The probe of a CONFIG.toml trains at most this many epochs unless --epochs says otherwise:
# enough for every check (overfitting needs 6 epochs to be seen), short enough to wait for.
PROBE_EPOCHS = 10


def _probe(args: argparse.Namespace, target: Path) -> Examination:
    """Train the probe of a CONFIG.toml into its own run directory and examine it there."""
    cfg = load_config(target, list(args.set or []))
    cfg = replace(cfg, **{"train.epochs": min(cfg.train.epochs, PROBE_EPOCHS),
                          **dedicated_flags(args)})
    run_dir = (Path(args.out) if args.out
               else default_run_dir(replace(cfg, name=f"{cfg.name}-doctor")))
    with rundir.hold(run_dir, "probe run directory"):
        if (run_dir / "config.toml").exists():
            raise DnnlabError(f"{run_dir} already holds a run; choose another --out")
        print(f"probe: training {cfg.name} for {cfg.train.epochs} epochs with layer recording "
              f"into {run_dir}")
        probe_run(cfg, run_dir)
        return examine(run_dir)


def cmd_doctor(args: argparse.Namespace) -> int:
    target = Path(args.target)
    if target.is_dir():
        if args.set:
            raise DnnlabError("--set applies to a CONFIG.toml probe, not to a finished run "
                              "directory; drop it, or pass the config instead")
        check_run(target, accept_legacy=args.accept_legacy)
        with rundir.output_folder(target, args.out, "doctor folder") as folder:
            ex = examine(target, folder=folder)
    elif target.suffix == ".toml":
        ex = _probe(args, target)
    else:
        raise DnnlabError(f"{target}: not a run directory nor a .toml config; pass the folder "
                          "'dnnlab train' printed or a config such as examples/mnist_5x100.toml")
    print(format_findings(ex.findings))
    print(f"report: {ex.report}")
    return 0


def register(sub: Any, with_config: Any = None) -> None:
    sp = sub.add_parser("doctor", help="what is wrong with a run, and the chapter's remedy")
    sp.add_argument("target", metavar="RUN_DIR|CONFIG.toml",
                    help="a run directory with layers.csv, or a config to probe-train")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config value of the probe, e.g. --set model.init=he_normal")
    with_flags(sp, epochs=f"probe epochs (default: the config's, at most {PROBE_EPOCHS})")
    sp.add_argument("--out", type=rundir.out_arg,
                    help="probe run directory (default runs/NAME-doctor-TIMESTAMP); for a RUN_DIR, "
                    "the folder for findings.json and doctor.html (default: the run directory, or "
                    "a temporary folder while another process still trains it)")
    with_legacy(sp)
    with_threads(sp)
    sp.set_defaults(func=cmd_doctor)
