"""Sweeps: many variants of one config, trained at once by the K-model engine.

``--set optim.lr=1e-5,3e-5,1e-4 --set model.dropout=0,0.2 --seeds 3`` is the grid of every
combination (here 3 x 2 x 3 = 18 models). Variants that differ only in what the engine can vary per
model (seed, learning rate, momentum, dropout rate, penalties ...) are trained together; variants
of another shape form groups of their own, each group one engine run. Each variant gets a run
directory like ``dnnlab train`` writes, and the sweep a summary table and a report.
"""

from __future__ import annotations

import csv
import io as _io
import itertools
import time
from pathlib import Path
from typing import Any

from dnnlab import config as config_mod
from dnnlab import io
from dnnlab.config import RunConfig
from dnnlab.errors import ConfigError


def split_values(text: str) -> list[str]:
    """Split ``a,b,c`` on the commas that are not inside brackets or quotes."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur).strip())
    if any(p == "" for p in parts):
        raise ConfigError(f"--set value {text!r} has an empty item; write e.g. optim.lr=1e-4,3e-4")
    return parts


def grid(sets: list[str]) -> list[dict[str, Any]]:
    """Every combination of the ``key=v1,v2,...`` lists, as dicts of dotted key -> value."""
    axes: list[tuple[str, list[Any]]] = []
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value[,value...], e.g. optim.lr=1e-4,3e-4")
        key, text = item.split("=", 1)
        axes.append((key.strip(), [config_mod.parse_value(v) for v in split_values(text)]))
    keys = [k for k, _ in axes]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


def variant_name(overrides: dict[str, Any], seed: int) -> str:
    parts = [f"{k.split('.')[-1]}={v}" for k, v in overrides.items()]
    return "_".join(parts + [f"seed={seed}"]).replace("/", "-").replace(" ", "")


def sweep(cfg: RunConfig, sets: list[str], seeds: int = 1, out: str | Path | None = None,
          *, progress: bool = True) -> Path:
    """Train every variant; write one run directory each plus ``summary.csv`` and ``report.html``."""
    from dnnlab.data import load_from_config
    from dnnlab.train.driver import PER_MODEL_KEYS, Variant, train_many
    from dnnlab.train.run import default_run_dir

    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: need at least 1")
    combos = grid(sets)
    for combo in combos:                              # validate every variant before any work
        config_mod.replace(cfg, **combo)
    out = Path(out) if out is not None else default_run_dir(cfg).with_name(
        f"{cfg.name}-sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    groups: dict[str, list[tuple[dict[str, Any], int]]] = {}
    for combo in combos:
        shape = {k: v for k, v in combo.items() if k not in PER_MODEL_KEYS}
        for s in range(seeds):
            groups.setdefault(repr(sorted(shape.items())), []).append((combo, cfg.train.seed + s))
    data = load_from_config(cfg.data)
    rows = []
    for members in groups.values():
        shape = {k: v for k, v in members[0][0].items() if k not in PER_MODEL_KEYS}
        group_cfg = config_mod.replace(cfg, **shape) if shape else cfg
        variants = [Variant(seed=seed, overrides={k: v for k, v in combo.items() if k in PER_MODEL_KEYS})
                    for combo, seed in members]
        results = train_many(group_cfg, data, variants, device=cfg.train.device, progress=progress)
        for (combo, seed), res in zip(members, results):
            name = variant_name(combo, seed)
            vcfg = config_mod.replace(res.config, name=name)
            rows.append(_write_variant(out / name, vcfg, res, data))
    _write_summary(out, rows)
    from dnnlab.report import report_runs
    report_runs([out / r["run"] for r in rows], out)
    return out


def _write_variant(run_dir: Path, cfg: RunConfig, res, data) -> dict[str, Any]:

    from dnnlab.train.callbacks import CsvLogger
    from dnnlab.train.checkpoint import save_model
    from dnnlab.train.driver import evaluate
    io.write_text(run_dir / "config.toml", config_mod.to_toml(cfg))
    CsvLogger(run_dir / "metrics.csv").write(res.history)
    test = {}
    if data.test is not None and len(data.test.y):
        test = evaluate(res.model, *data.test.tensors())
    h = res.history
    i = h["epoch"].index(res.best_epoch) if res.best_epoch in h["epoch"] else -1
    secs = sorted(h["seconds"])
    summary = {"name": cfg.name, "status": "failed" if res.status == "diverged" else res.status,
               "message": res.message, "best_epoch": res.best_epoch,
               "best_val_loss": h["val_loss"][i], "best_val_accuracy": h["val_accuracy"][i],
               "test_loss": test.get("loss"), "test_accuracy": test.get("accuracy"),
               "epochs_run": len(h["epoch"]), "seconds_per_epoch": secs[len(secs) // 2] if secs else None,
               "total_seconds": sum(h["seconds"])}
    io.write_json(run_dir / "summary.json", summary)
    save_model(res.model, run_dir / "model.safetensors", {"best_epoch": res.best_epoch})
    return {"run": run_dir.name, **{k: summary[k] for k in (
        "status", "best_epoch", "best_val_loss", "best_val_accuracy", "test_accuracy", "epochs_run")}}


def _write_summary(out: Path, rows: list[dict[str, Any]]) -> None:
    rows.sort(key=lambda r: (r["best_val_loss"] is None, r["best_val_loss"] or 0.0))
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    io.write_text(out / "summary.csv", buf.getvalue())


def format_table(out: Path) -> str:
    rows = list(csv.DictReader(open(out / "summary.csv")))
    lines = [f"{'run':<48} {'status':<14} {'best ep':>7} {'val loss':>9} {'val acc':>8} {'test acc':>8}"]
    for r in rows:
        def f(k, fmt):
            return format(float(r[k]), fmt) if r[k] not in ("", "None") else "-"
        lines.append(f"{r['run'][:48]:<48} {r['status']:<14} {r['best_epoch']:>7} "
                     f"{f('best_val_loss', '.4f'):>9} {f('best_val_accuracy', '.4f'):>8} "
                     f"{f('test_accuracy', '.4f'):>8}")
    return "\n".join(lines)
