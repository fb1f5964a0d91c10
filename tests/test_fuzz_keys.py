"""Every key of the config table, set to a well-typed edge value (a bound, just past it, 0, a
negative, a huge number, nan/inf, an empty list, a wrong type), through ``dnnlab train``,
``dnnlab sweep`` and ``dnnlab lr-find`` in-process: each ends in success or in one line on stderr
with exit code 2, never a traceback."""

import math

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import run_cli
from dnnlab.config import KEYS, Key

BASE = """name = "fuzz"
[data]
name = "synthetic"
limit = 64
valid_size = 32
[model]
depth = 1
width = 4
[train]
epochs = 1
batch_size = 16
eval_batch_size = 64
progress = false
record_every = 0
checkpoint_every = 0
"""
# A legal extreme may only cost time (train.epochs = 10^6): the flags, applied after --set, keep
# every run to one small epoch on the CPU, while the --set value is still parsed and bounded.
FLAGS = ["--epochs", "1", "--device", "cpu"]


def _just_past(x: float, up: bool) -> float:
    step = max(abs(x), 1.0) * 1e-6
    return x + step if up else x - step


def edge_values(k: Key) -> list:
    """Values of (about) the right type that sit on or just past the key's limits."""
    tp = k.type
    text = str(tp)
    if "dict" in text:
        return [{}, {"x": 1}, 1]
    if "list" in text:
        item = 1.0 if "float" in text else 1
        out = [[], [0 * item], [-item], ["x"], [item] * 3]
        if k.lo is not None:
            out += [[type(item)(k.lo)], [_just_past(k.lo, False)]]
        if k.hi is not None:
            out += [[type(item)(k.hi)], [k.hi * 10]]
        if "float" in text:
            out += [[math.nan], [math.inf]]
        return out
    if tp is bool or text == "bool":
        return [True, False, 0, "yes"]
    if k.choices is not None:
        return [*k.choices[:3], k.choices[-1], "", "nope", 1, "none"]
    if "str" in text:
        return ["", "x", "../../escape", "/tmp/abs", "a" * 300, "a\nb", 1, "none"]
    is_int = "int" in text and "float" not in text
    out = [0, -1, 1, 10**30, "x", True, "none"]
    for bound, up in ((k.lo, False), (k.hi, True)):
        if bound is not None:
            out += [bound, _just_past(bound, up)]
    if is_int:
        out += [2**63, 1.5]
    else:
        out += [1e300, -1e300, math.nan, math.inf, -math.inf, 1e-300]
    return out


CASES = [(name, v) for name, k in KEYS.items() for v in edge_values(k)]


def _toml(value) -> str:
    """``value`` as a one-line TOML literal, the right side of ``--set KEY=VALUE``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def _check_clean(code, err, argv):
    assert code in (0, 2), (argv, err[-2000:])
    assert "Traceback" not in err, (argv, err[-2000:])
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("dnnlab"), (argv, err[-2000:])


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(case=st.sampled_from(CASES))
def test_every_key_at_its_edges_ends_cleanly(case, tmp_path_factory):
    name, value = case
    d = tmp_path_factory.mktemp("keys")
    cfg = d / "base.toml"
    cfg.write_text(BASE)
    setting = f"{name}={_toml(value)}"
    for argv in (["train", str(cfg), "--set", setting, "--out", str(d / "run"), *FLAGS],
                 ["sweep", str(cfg), "--set", "optim.lr=0.01,0.02", "--fixed", setting,
                  "--out", str(d / "sweep"), *FLAGS],
                 ["lr-find", str(cfg), "--set", setting, "--steps", "5",
                  "--out", str(d / "lr.png"), *FLAGS]):
        code, _, err = run_cli(argv)
        _check_clean(code, err, argv)


def test_the_cases_cover_every_key():
    assert {name for name, _ in CASES} == set(KEYS)
    assert ("optim.lr", 0) in CASES and ("model.hidden", []) in CASES
    assert [_toml(v) for v in ({"x": 1}, [1.0, math.nan], "a\nb")] == ['{x = 1}', '[1.0, nan]', '"a\\nb"']
