"""The commands of one run and its model: train, datasets, export and predict (the commands
that draw, report, lr-find and sweep, are :mod:`dnnlab.commands_plot`; the others live beside
the code they drive: ``dnnlab.cli.COMMANDS``).

Loaded by :mod:`dnnlab.cli` only when one of them is run, so that ``dnnlab --version`` and
``dnnlab --help`` start without torch.
"""

from __future__ import annotations

import sys

from dnnlab import data as datasets
from dnnlab import io, rundir, runs
from dnnlab.cli_common import config_from_args, dedicated_flags, with_legacy, with_threads
from dnnlab.config import RESUME_KEYS
from dnnlab.errors import DnnlabError
from dnnlab.export import OPSET, OPSETS, export_run
from dnnlab.predict import predict_file


def cmd_train(args) -> int:
    if args.resume:   # CONFIG, --set and flags may change only what a resume allows (checked)
        cfg = runs.resume_config(args.resume, args.config, list(args.set or []), dedicated_flags(args),
                                 accept_legacy=args.accept_legacy)
        result = runs.train_run(cfg, args.out, resume=args.resume,   # via the package: patchable
                                accept_legacy=args.accept_legacy)
    else:
        if args.config is None:
            raise DnnlabError("dnnlab train needs a CONFIG.toml (e.g. examples/mnist_5x100.toml) "
                              "or --resume RUN_DIR")
        cfg = config_from_args(args)
        result = runs.train_run(cfg, args.out)
    s = result.summary()
    line = (f"{result.status}: best {result.monitor} {result.best:.4f} at epoch {result.best_epoch}"
            f" ({result.epochs_run} epochs, {result.seconds_per_epoch:.2f} s/epoch)")
    if s["test_accuracy"] is not None:
        line += f", test accuracy {s['test_accuracy']:.4f}"
    print(line)
    for warning in s["warnings"]:            # what makes those numbers weak (data.caveats)
        print(f"warning: {warning}")
    print(f"run directory: {result.run_dir}")
    if result.status == "diverged":
        print(f"dnnlab: error: {result.message}", file=sys.stderr)
        return 1
    return 0


def cmd_datasets(args) -> int:
    print(datasets.format_status(datasets.dataset_status(args.data_dir)))
    return 0


def cmd_export(args) -> int:
    if args.out is not None:              # a file: an existing folder there is refused now
        io.check_target(args.out, "--out", file=True)
    done = export_run(args.run_dir, args.format, args.out, opset=args.opset,
                      accept_legacy=args.accept_legacy)
    print(f"exported {args.run_dir} to {done.path} (ONNX opset {args.opset}; input: raw float32 "
          f"rows, the run's preprocessing is in the graph; output: logits; class names in its "
          f"metadata_props; on {done.rows} test rows onnxruntime matches dnnlab within "
          f"{done.diff:.1e}, tolerance {done.tolerance:.1e})")
    return 0


def cmd_predict(args) -> int:
    done = predict_file(args.run_dir, args.file, args.out, accept_legacy=args.accept_legacy)
    counts = ", ".join(f"{name}: {n}" for name, n in done.counts.items())
    line = f"predicted {done.rows} rows ({counts})"
    if done.accuracy is not None:
        line += f"; accuracy {done.accuracy:.4f} against the file's labels"
    print(line)
    print(f"predictions: {done.path} (prediction = class name, p_CLASS = its probability)")
    return 0


def register(sub, with_config) -> None:
    """Add this module's commands to the ``dnnlab`` parser's subcommands."""
    sp = sub.add_parser("train", help="train one model from a config")
    with_config(sp, required=False)
    sp.add_argument("--out", type=rundir.out_arg, help="run directory (default runs/NAME-TIMESTAMP)")
    sp.add_argument("--resume", metavar="RUN_DIR", help="continue a killed or stopped run in its "
                    "own directory, on the same data; with CONFIG/--set only these keys may "
                    f"change: {', '.join(RESUME_KEYS)} (anything else is refused, naming the keys)")
    with_legacy(sp)
    with_threads(sp)
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("datasets", help="which datasets are available, where, checksums")
    sp.add_argument("--data-dir", help="also look in this folder")
    sp.set_defaults(func=cmd_datasets)

    sp = sub.add_parser("export", help="write a run's model for other runtimes (ONNX)",
                        description="Export the final model of a run directory (model.safetensors) "
                        "in inference mode: dropout off, batch norm on its moving statistics. The "
                        "file is checked and run with onnxruntime against dnnlab's own outputs "
                        "on the first test rows of the run's data before it is written. Needs the "
                        "export extra: pip install -e '.[export]' in the dnnlab checkout.")
    sp.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'dnnlab train'")
    sp.add_argument("--format", default="onnx", choices=("onnx",), help="the format (default onnx)")
    sp.add_argument("--out", type=rundir.out_arg, metavar="PATH",
                    help="the output file (default RUN_DIR/model.onnx)")
    sp.add_argument("--opset", type=int, default=OPSET, help=f"ONNX operator-set version, "
                    f"{OPSETS.start} to {OPSETS.stop - 1} (default {OPSET})")
    with_legacy(sp)
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("predict", help="predict the classes of a file's rows with a run's model",
                        description="Apply a run's model to raw rows: a .csv or .parquet table "
                        "(the run's feature columns, matched by name; its label column, if "
                        "present, gives the accuracy), an .npz (x, x_test or x_train) or a "
                        "built-in dataset's test split (e.g. mnist). The run's own preprocessing "
                        "(pixel scale, standardization from its training split) is applied. "
                        "Writes a CSV: label (when known), prediction, p_CLASS per class.")
    sp.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'dnnlab train'")
    sp.add_argument("file", metavar="FILE", help="a .csv, .parquet or .npz file, or a dataset name")
    sp.add_argument("--out", type=rundir.out_arg, metavar="PATH",
                    help="the CSV to write (default RUN_DIR/predictions-NAME.csv)")
    with_legacy(sp)
    sp.set_defaults(func=cmd_predict)
