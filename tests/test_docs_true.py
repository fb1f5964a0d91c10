"""The contributor docs are true to the code (issue 25, point 8): every file path that
ARCHITECTURE.md and CONTRIBUTING.md mention exists, every ``dnnlab.`` name they mention imports,
and the pytest commands they show select tests."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("ARCHITECTURE.md", "CONTRIBUTING.md")
PACKAGE = ROOT / "src" / "dnnlab"
# what a run or a command writes, not files of the checkout
RUN_OUTPUTS = {"config.toml", "best_config.toml", "metrics.csv", "summary.json", "layers.csv",
               "report.html", "results.json", "model.safetensors", "start.json", "last.safetensors",
               "preprocessing.json", "model.onnx", "study.db", "trials.csv", "runs.csv",
               "summary.csv", "sweep.db", "mnist.npz", "iris.csv",
               "CONFIG.toml", "my.toml"}      # placeholders for the user's own config
PATH = re.compile(r"(?<![\w.])(\.?[\w*][\w./*-]*\.(?:py|md|toml|ipynb|yaml|cfg|npz|txt))\b")
CONSTANT = re.compile(r"^[A-Z][A-Z0-9]*_[A-Z0-9_]+$")        # `REAL_DATASETS`, `RESUME_KEYS`
NAME = re.compile(r"(?<![\w/])dnnlab(?:\.[A-Za-z_]\w*)+")


def _spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text) + re.findall(r"\]\(([^)]+)\)", text)


def _exists(path: str) -> bool:
    if path.split("/")[-1] in RUN_OUTPUTS:
        return True
    for base in (ROOT, ROOT / "src", PACKAGE, ROOT / "tests"):
        if list(base.glob(path)):
            return True
    return "/" not in path and any(PACKAGE.rglob(path))


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_a_doc_mentions_exists(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    paths = {m for span in _spans(text) for m in PATH.findall(span)}
    assert len(paths) > 10
    missing = sorted(p for p in paths if not _exists(p))
    assert not missing, f"{doc} names files that do not exist: {missing}"


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("doc", DOCS)
def test_every_dnnlab_name_a_doc_mentions_exists(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    names = set(NAME.findall(text)) - {"dnnlab.ch11"}
    assert names
    bad = sorted(n for n in names if not _resolves(n.rstrip(".")))
    assert not bad, f"{doc} names what the package does not have: {bad}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_constant_a_doc_names_is_defined(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    names = {s for s in _spans(text) if CONSTANT.match(s)}
    code = "\n".join(p.read_text(encoding="utf-8") for d in ("src", "tests")
                     for p in (ROOT / d).rglob("*.py"))
    gone = sorted(n for n in names if not re.search(rf"^\s*{n}\b[^=]*=", code, re.M)
                  and f'"{n}"' not in code)                  # defined, or an environment variable read
    assert not gone, f"{doc} names constants no module defines: {gone}"


def test_the_pytest_examples_select_tests():
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    commands = re.findall(r"python -m pytest ([^\n#]+)", text)
    assert commands
    for args in commands:
        argv = [a for a in args.split() if a not in ("-q", "-x")]
        done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                               "-p", "no:cacheprovider", *argv], cwd=ROOT, capture_output=True,
                              text=True)
        selected = re.search(r"(\d+)(?:/\d+)? tests? (?:collected|selected)", done.stdout)
        assert done.returncode == 0 and selected and int(selected.group(1)) > 0, (args, done.stdout[-500:])
