"""Property-based fuzzing of the command line: random and malformed configs and argument lists
must end in a clean one-line error with exit code 2, or in a valid run (exit 0)."""

import dataclasses
import string
import typing

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import run_cli
from dnnlab.config import RunConfig

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))

SECTIONS = {f.name: f.type for f in dataclasses.fields(RunConfig)}
KNOWN = {name: [f.name for f in dataclasses.fields(typing.get_type_hints(RunConfig)[name])]
         for name in ("data", "model", "optim", "train")}

scalars = st.one_of(st.integers(-3, 40), st.floats(-2, 2), st.just(float("nan")), st.just(float("inf")),
                    st.booleans(),
                    st.text(string.printable, max_size=8),
                    st.sampled_from(["elu", "relu", "selu", "he_normal", "nadam", "sgd", "none",
                                     "before", "alpha", "1cycle", "cpu", "auto"]))
values = st.one_of(scalars, st.lists(scalars, max_size=3),
                   st.dictionaries(st.sampled_from(["name", "max_lr", "x"]), scalars, max_size=2))


@st.composite
def configs(draw):
    raw = {}
    for section, keys in KNOWN.items():
        if draw(st.booleans()):
            names = draw(st.lists(st.one_of(st.sampled_from(keys), st.text("abcxyz_", min_size=1,
                                                                           max_size=6)),
                                  max_size=4))
            raw[section] = {k: draw(values) for k in names}
    if draw(st.integers(0, 9)) == 0:
        raw[draw(st.text("abcz", min_size=1, max_size=4))] = draw(values)
    return raw


def check_clean(code, err):
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, err
        assert lines[0].startswith("dnnlab")


@SETTINGS
@given(raw=configs())
def test_random_configs_fail_cleanly_or_train(raw, tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    path = d / "c.toml"
    try:
        path.write_text(tomli_w.dumps(raw))
    except (TypeError, ValueError):
        return
    code, _, err = run_cli(["train", str(path), "--out", str(d / "run"), "--set", 'data.name="synthetic"',
                            "--set", "data.limit=300", "--set", "train.progress=false",
                            "--epochs", "1", "--device", "cpu"])
    check_clean(code, err)


@SETTINGS
@given(text=st.text(max_size=80))
def test_malformed_toml_is_one_line(text, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "c.toml"
    path.write_text(text)
    code, _, err = run_cli(["train", str(path), "--out", str(path.parent / "run"),
                            "--set", 'data.name="synthetic"', "--set", "data.limit=300",
                            "--set", "train.epochs=1", "--set", "train.progress=false"])
    check_clean(code, err)


words = st.one_of(st.text(string.ascii_letters + string.digits + "-=.,[]\"'_", max_size=12),
                  st.sampled_from(["--set", "--epochs", "--device", "--out", "--data-dir", "--seeds",
                                   "--trials", "--folds", "--sparsity", "--quick", "--resume",
                                   "optim.lr=abc", "model.width=-1", "train.epochs=0", "cuda",
                                   "nope", "0", "-1", "1e9", "[1,", "x=y=z"]))


@SETTINGS
@given(command=st.sampled_from(["train", "report", "datasets", "lr-find", "sweep", "tune",
                                "study", "explain", "prune", "bogus", "--bogus"]),
       args=st.lists(words, max_size=6))
def test_random_command_lines_fail_cleanly(command, args, tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    cfg = d / "c.toml"
    cfg.write_text('name = "f"\n[data]\nname = "synthetic"\nlimit = 200\n[train]\nepochs = 1\n'
                   'progress = false\n[tune]\n"optim.lr" = {low = 1e-4, high = 1e-2, log = true}\n')
    argv = [command, *[str(cfg) if a == "CFG" else a for a in args]]
    if command in ("train", "lr-find", "sweep", "tune"):
        argv.insert(1, str(cfg))
        argv += ["--out", str(d / "out")]
    if command in ("study", "explain") and len(args) == 0:
        argv.append("nope")
    if command in ("study", "explain") and args and args[0] in (
            "transfer", "cifar10", "all", "symmetry", "bias-init", "init-variance", "selu",
            "activations", "momentum", "sparsity", "dropout-cost", "mc-dropout"):
        return                                   # a real study is not a fuzz target
    if command == "tune":
        argv += ["--trials", "1", "--folds", "2"]
    code, _, err = run_cli(argv)
    check_clean(code, err)
