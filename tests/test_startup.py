"""Quick start (issue 25, point 4): ``dnnlab --version`` and ``--help`` import no torch, and a
training command imports none of the heavy packages it does not use (optuna, sqlalchemy,
matplotlib, onnx, pandas). Each check runs in a fresh interpreter, where sys.modules is honest.
Timings: benchmarks/startup.py."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dnnlab import cli

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "optuna", "sqlalchemy", "matplotlib", "onnx", "onnxruntime", "pandas")


def _loaded_after(argv, cwd):
    """Run ``dnnlab ARGV`` in a fresh interpreter; return (exit code, heavy modules loaded)."""
    code = ("import json, sys, dnnlab_launch\n"
            f"try:\n    rc = dnnlab_launch.main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
            f"print(json.dumps([rc, [m for m in {HEAVY!r} if m in sys.modules]]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                         text=True, check=True).stdout
    rc, loaded = json.loads(out.strip().splitlines()[-1])
    return rc, loaded


@pytest.mark.parametrize("argv", [["--version"], ["--help"], []])
def test_version_and_help_import_no_torch(argv, tmp_path):
    rc, loaded = _loaded_after(argv, tmp_path)
    assert rc in (0, 2) and loaded == []


def test_a_training_command_loads_torch_and_nothing_heavy_it_does_not_use(tmp_path):
    (tmp_path / "c.toml").write_text('name = "s"\n[data]\nname = "synthetic"\nlimit = 100\n'
                                     'valid_size = 50\n[model]\ndepth = 1\nwidth = 4\n'
                                     '[train]\nepochs = 1\nprogress = false\n')
    rc, loaded = _loaded_after(["train", "c.toml", "--out", "run"], tmp_path)
    assert rc == 0 and (tmp_path / "run" / "model.safetensors").is_file()
    assert loaded == ["torch"]


def test_the_help_lines_of_dnnlab_help_are_the_commands_own():
    """cli.COMMANDS answers --help without importing the commands; it must say what they say."""
    full = cli.build_parser()
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    registered = {a.dest: a.help for a in sub._choices_actions}
    assert registered == {name: help_line for name, (_, help_line) in cli.COMMANDS.items()}
    assert list(sub.choices) == list(cli.COMMANDS)
