"""Compare finished (or still running) runs: curves overlaid and a table of results.

The inputs are only the files the trainer leaves in a run directory (``metrics.csv`` and
``summary.json``), so a report can be made long after training, on another machine, without
torch. A run killed before writing its summary is still reported from its metrics alone.

Both files are validated as they are read (a damaged one is one error naming it), and a summary
that says "running" while no process holds the run directory (:func:`dnnlab.rundir.is_held`) is
shown as "interrupted": the process that wrote it was killed.
"""

from __future__ import annotations

import csv
import glob
import math
from pathlib import Path

from dnnlab import rundir
from dnnlab.errors import DnnlabError
from dnnlab.io import read_json
from dnnlab.report.html import Page
from dnnlab.report.plots import learning_curves, save_figure

COLUMNS = ["run", "status", "best epoch", "best val acc", "best val loss", "test acc",
           "seconds/epoch", "epochs"]
FORMATS = {"best val acc": ".2%", "test acc": ".2%", "best val loss": ".4f", "seconds/epoch": ".2f"}
STATUSES = ("running", "completed", "stopped_early", "diverged", "failed", "interrupted")
# summary.json keys and the types their values must have (None is allowed for each)
SUMMARY_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "status": (str,), "message": (str,), "best_epoch": (int,),
    "best_val_loss": (int, float), "best_val_accuracy": (int, float), "test_loss": (int, float),
    "test_accuracy": (int, float), "epochs_run": (int,), "seconds_per_epoch": (int, float),
    "total_seconds": (int, float), "resumed": (bool,), "warnings": (list,)}
MAX_METRICS_BYTES = 64 * 2**20


def read_metrics(run_dir: str | Path) -> dict[str, list[float]]:
    """The columns of ``metrics.csv`` as float lists; empty cells (a metric not measured that
    epoch) become NaN so every column has one entry per epoch."""
    path = rundir.run_file(run_dir, "metrics.csv")
    try:
        if path.stat().st_size > MAX_METRICS_BYTES:
            raise DnnlabError(f"{path} is larger than {MAX_METRICS_BYTES >> 20} MiB; it is not a "
                              "dnnlab metrics file")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DnnlabError(f"{path} is not UTF-8 text; the file is damaged") from None
    except OSError as e:
        raise DnnlabError(f"{path} cannot be read ({e.strerror or e})") from None
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as e:
        raise DnnlabError(f"{path} is not valid CSV ({e}); the file is damaged") from None
    if not rows or "epoch" not in rows[0]:
        raise DnnlabError(f"{path} has no 'epoch' column; it is not a dnnlab metrics file")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header) or any(not h for h in header):
        raise DnnlabError(f"{path}: its header has empty or repeated column names; the file is "
                          "damaged")
    columns: dict[str, list[float]] = {name: [] for name in header}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DnnlabError(f"{path} line {line}: {len(row)} cells for {len(header)} columns; the "
                              "file is damaged (truncated or edited)")
        for name, cell in zip(header, row):
            cell = cell.strip()
            try:
                columns[name].append(float(cell) if cell else math.nan)
            except ValueError:
                raise DnnlabError(f"{path} line {line}: {name}={cell[:20]!r} is not a number; "
                                  "the file is damaged") from None
    epochs = columns["epoch"]
    if any(not math.isfinite(e) or e != int(e) or e < 0 for e in epochs) or \
            any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise DnnlabError(f"{path}: the epoch column is not a rising list of whole numbers; the "
                          "file is damaged")
    return columns


def read_summary(run_dir: str | Path) -> dict:
    """The run's ``summary.json`` (status, best epoch and scores, timing), validated.

    A "running" status whose run no live process holds becomes "interrupted".
    """
    path = rundir.run_file(run_dir, "summary.json")
    summary = read_json(path)
    if not isinstance(summary, dict):
        raise DnnlabError(f"{path} is not a JSON object; the file is damaged")
    for key, types in SUMMARY_TYPES.items():
        v = summary.get(key)
        if v is None:
            continue
        bad = not isinstance(v, types) or (isinstance(v, bool) and bool not in types)
        if bad or (isinstance(v, float) and math.isinf(v)):
            raise DnnlabError(f"{path}: {key} = {str(v)[:40]!r} is not a valid value; the file is "
                              "damaged")
    status = summary.get("status")
    if status is not None and status not in STATUSES:
        raise DnnlabError(f"{path}: status {str(status)[:40]!r} is not one of {', '.join(STATUSES)};"
                          " the file is damaged")
    if status == "running" and not rundir.is_held(run_dir):
        summary["status"] = "interrupted"
    return summary


def _finite(values: list[float]) -> list[tuple[int, float]]:
    return [(i, v) for i, v in enumerate(values) if not math.isnan(v)]


def _from_metrics(m: dict[str, list[float]]) -> dict:
    """What a summary would say, recomputed from the metrics (best = lowest validation loss)."""
    out: dict = {"epochs_run": len(m["epoch"]), "status": "no summary"}
    val = _finite(m.get("val_loss", []))
    if val:
        i, loss = min(val, key=lambda t: t[1])
        out.update(best_epoch=int(m["epoch"][i]), best_val_loss=loss)
        if "val_accuracy" in m and not math.isnan(m["val_accuracy"][i]):
            out["best_val_accuracy"] = m["val_accuracy"][i]
    if _finite(m.get("test_accuracy", [])):
        out["test_accuracy"] = _finite(m["test_accuracy"])[-1][1]
    if _finite(m.get("seconds", [])):
        secs = [v for _, v in _finite(m["seconds"])]
        out["seconds_per_epoch"] = sum(secs) / len(secs)
    return out


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory a run wrote (it holds ``metrics.csv``)."""
    return (Path(path) / "metrics.csv").is_file()


def select_run_dirs(paths: list) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The run directories among ``paths``, and what was skipped and why.

    ``dnnlab report runs/mnist04-*`` gets whatever the shell's glob matched: besides the run
    directories that can be a sweep's folder, a plot ``lr-find`` wrote, or a ``report/`` folder.
    A folder holding run directories (a sweep's: one per variant) stands for them, in name order.
    The rest are skipped (and returned with the reason) rather than failing the whole report. A
    pattern the shell did not expand (quoted, or on Windows) is expanded here. Only when nothing
    usable remains is it an error, naming what was given.
    """
    expanded: list[Path] = []
    for raw in paths:
        text = str(raw)
        matches = sorted(glob.glob(text)) if glob.has_magic(text) and not Path(text).exists() else []
        expanded.extend(Path(m) for m in matches) if matches else expanded.append(Path(text))
    dirs, skipped = [], []
    for p in dict.fromkeys(expanded):
        if is_run_dir(p):
            dirs.append(p)
        elif not p.exists():
            skipped.append((p, "does not exist"))
        elif not p.is_dir():
            skipped.append((p, "not a directory"))
        elif variants := sorted(c for c in p.iterdir() if is_run_dir(c)):
            dirs.extend(variants)
        else:
            skipped.append((p, "no metrics.csv: not a run directory, nor a folder of run "
                            "directories (a sweep's)"))
    dirs = list(dict.fromkeys(dirs))   # a variant named both directly and through its sweep
    if not dirs:
        given = "; ".join(f"{p} ({why})" for p, why in skipped) or "nothing"
        raise DnnlabError(f"no run directory among the paths given ({given}); pass directories "
                          "written by `dnnlab train`")
    return dirs, skipped


def report_runs(run_dirs: list, out: Path | None = None) -> Path:
    """Write ``curves.png`` and a self-contained ``report.html`` comparing ``run_dirs``.

    Returns the html path. ``out`` defaults to the run directory itself for one run, else to
    ``report/`` beside the first run; while another process still trains the run (or holds the
    folder around them), the default is a folder of its own instead, so the run keeps one writer
    (:func:`dnnlab.rundir.output_folder`). Values missing from a summary are recomputed from metrics.
    """
    if not run_dirs:
        raise DnnlabError("no run directories given; pass at least one directory written by `dnnlab train`")
    dirs = [Path(d) for d in run_dirs]
    histories, rows, notes, best = {}, [], [], {}
    for d in dirs:
        metrics = read_metrics(d)
        summary = read_summary(d) if (d / "summary.json").is_file() else {}
        info = _from_metrics(metrics) | {k: v for k, v in summary.items() if v is not None}
        name = str(info.get("name") or d.name)
        while name in histories:  # two runs with one name would share a legend entry
            name += "'"
        histories[name] = metrics
        best[name] = info.get("best_epoch")
        rows.append({"run": name, "status": info["status"], "best epoch": info.get("best_epoch"),
                     "best val acc": info.get("best_val_accuracy"),
                     "best val loss": info.get("best_val_loss"), "test acc": info.get("test_accuracy"),
                     "seconds/epoch": info.get("seconds_per_epoch"), "epochs": info.get("epochs_run")})
        notes.append(f"{name}: {d.resolve()}" + (f" ({info['message']})" if info.get("message") else ""))
        notes += [f"{name}: warning: {str(w)[:300]}" for w in info.get("warnings") or []]  # data.caveats
    default = dirs[0] if len(dirs) == 1 else dirs[0].parent / "report"
    title = rows[0]["run"] if len(rows) == 1 else f"Comparison of {len(rows)} runs"
    with rundir.output_folder(default, out, "report folder") as folder:
        png = save_figure(learning_curves(histories, title=title, best_epochs=best),
                          folder / "curves.png")
        page = Page(title, "Learning curves and results, read from each run's metrics.csv and "
                    "summary.json.")
        page.table(rows, COLUMNS, formats=FORMATS)
        page.figure(png, "Train (dashed) and validation (solid) curves; one colour per run; a star "
                    "marks each run's best epoch (the weights it keeps).")
        page.heading("Runs").bullets(notes)
        return page.save(folder / "report.html")
