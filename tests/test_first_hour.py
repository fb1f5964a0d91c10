"""What a newcomer met in the first hour (issue 21), each checked as the user meets it."""

import argparse
import importlib.metadata
import platform
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

import dnnlab
from cli_helpers import run_cli
from dnnlab import cli
from dnnlab.config import ModelConfig
from dnnlab.errors import DnnlabError
from dnnlab.nn.mlp import build_mlp
from dnnlab.train.checkpoint import save_model

ROOT = Path(__file__).resolve().parents[1]


def test_load_model_takes_a_run_directory_or_its_file(tmp_path):
    model = build_mlp(ModelConfig(depth=2, width=8), 5, 3, seed=1)
    path = save_model(model, tmp_path / "run" / "model.safetensors")
    x = torch.randn(4, 5)
    for where in (tmp_path / "run", str(tmp_path / "run"), path):
        again = dnnlab.load_model(where)
        torch.testing.assert_close(again.module(x), model.eval()(x), rtol=0, atol=0)
        np.testing.assert_array_equal(again.predict_proba(x.numpy()).argmax(1), model(x).argmax(1).numpy())


def test_load_model_of_a_folder_without_a_model_names_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DnnlabError, match=r"empty holds no model.safetensors; pass the directory "
                                          r"of a finished `dnnlab train` run"):
        dnnlab.load_model(tmp_path / "empty")
    with pytest.raises(DnnlabError, match="checkpoint .*missing.safetensors not found"):
        dnnlab.load_model(tmp_path / "missing.safetensors")


def test_version_names_the_distribution_and_its_version():
    code, out, err = run_cli(["--version"])
    assert code == 0 and err == ""
    assert out == (f"dnnlab {cli.version()} (dnnlab-ch11; torch {torch.__version__}, Python "
                   f"{platform.python_version()})\n")
    # the distribution's own version when installed under pyproject's name, else the package's
    try:
        assert cli.version() == importlib.metadata.version(cli.DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        assert cli.version() == dnnlab.__version__


def test_the_distribution_name_is_pyprojects_and_not_the_indexs_other_dnnlab():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == cli.DISTRIBUTION != "dnnlab"
    assert project["version"] == dnnlab.__version__
    assert set(project["optional-dependencies"]) >= {"export", "tensorboard"}


def test_every_install_hint_is_the_checkouts_editable_form():
    """`pip install 'dnnlab[x]'` fetches an unrelated project of that name from the index, and
    `pip install '.[x]'` replaces the editable install with a copy: neither may be suggested."""
    bad = re.compile(r"pip install (-U )?['\"]?(dnnlab|\.)\[")
    files = [*ROOT.glob("*.md"), *(ROOT / "src").rglob("*.py"), *(ROOT / "tests").rglob("*.py"),
             *(ROOT / "examples").glob("*"), *(ROOT / "benchmarks").glob("*.md")]
    found = [f"{f.relative_to(ROOT)}: {line.strip()}" for f in files
             if f.is_file() and f != Path(__file__).resolve()
             for line in f.read_text(errors="replace").splitlines()
             if bad.search(line) and "without it" not in line]   # CONTRIBUTING's warning is no hint
    assert found == []
    code, out, _ = run_cli(["export", "--help"])
    assert code == 0 and "pip install -e '.[export]' in the dnnlab checkout" in " ".join(out.split())


def _helps(parser, name="dnnlab"):
    """Every command's --help text, by its name (``dnnlab study transfer``...)."""
    yield name, parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from _helps(p, f"{name} {sub}")


def test_no_help_shows_rest_markup():
    helps = dict(_helps(cli.build_parser()))
    assert "dnnlab study transfer" in helps and "dnnlab study cifar10" in helps
    marked = {name: line for name, text in helps.items() for line in text.splitlines()
              if "``" in line or ":func:" in line or ":mod:" in line}
    assert marked == {}


@pytest.mark.parametrize("command", [["doctor"], ["study", "transfer"], ["study", "cifar10"]])
def test_device_and_data_dir_state_their_defaults(command):
    code, out, _ = run_cli([*command, "--help"])
    text = " ".join(out.split())
    assert code == 0
    device = text[text.index("--device {auto,cpu,cuda}", text.index("options:")):]
    assert re.match(r"--device \{auto,cpu,cuda\} [^-]*\(default[: ][^)]+\)", device), device[:150]
    data_dir = text[text.index("--data-dir DATA_DIR", text.index("options:")):]
    assert re.match(r"--data-dir DATA_DIR [^-]*\(default: \$DNNLAB_DATA_DIR, the cache, the package, "
                    r"a download\)", data_dir), data_dir[:150]


def test_sweep_fixes_a_value_one_way_only(tmp_path):
    # --set KEY=V (one value) fixes it for every variant; the second way, --fixed, is gone
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\n')
    code, _, err = run_cli(["sweep", str(cfg), "--fixed", "train.epochs=1"])
    assert code == 2 and err.count("\n") == 1 and "unrecognized arguments: --fixed" in err
    code, out, _ = run_cli(["sweep", "--help"])
    assert "--fixed" not in out
    assert "a single value (--set train.epochs=2) is a fixed setting" in " ".join(out.split())
