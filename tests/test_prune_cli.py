import json

import pytest

from dnnlab import cli
from dnnlab.analysis import prune_cli
from dnnlab.config import replace
from dnnlab.train import fit


@pytest.fixture
def with_prune():
    """The prune command is registered by dnnlab.cli itself."""
    assert cli.COMMANDS["prune"][0] == prune_cli.__name__


def test_prune_command_end_to_end(with_prune, tiny, tiny_cfg, tmp_path, monkeypatch, capsys):
    import dnnlab.data as data_mod
    monkeypatch.setattr(data_mod, "load_from_config", lambda cfg, **kw: tiny)
    run = tmp_path / "run"
    fit(replace(tiny_cfg, **{"optim.name": "adam"}), tiny, run)
    code = cli.main(["prune", str(run), "--sparsity", "0.9", "--epochs", "1", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    n = 12 * 16 + 16 * 16 + 16 * 3   # kernel weights of the tiny MLP
    assert f"sparsity  {100 * round(0.9 * n) / n:.2f}%" in out and str(run / "pruned-0.9") in out
    assert out.splitlines()[1].startswith("pruned") and "+1 epochs" in out
    report = json.loads((run / "pruned-0.9" / "report.json").read_text())
    assert report["finetune_epochs"] == 1 and report["pruned"]["sparsity"] == pytest.approx(0.9, abs=2e-3)


def test_prune_command_user_errors(with_prune, tmp_path, capsys):
    assert cli.main(["prune", str(tmp_path), "--sparsity", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dnnlab: error:") and "config.toml" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []                     # refused: no lock file left behind
    missing = tmp_path / "no-such-run"
    assert cli.main(["prune", str(missing), "--sparsity", "0.5"]) == 2
    assert "does not exist" in capsys.readouterr().err and not missing.exists()   # not created
    with pytest.raises(SystemExit) as e:
        cli.main(["prune", str(tmp_path)])
    assert e.value.code == 2
    assert "--sparsity" in capsys.readouterr().err


def test_prune_help_mentions_options(with_prune, capsys):
    with pytest.raises(SystemExit):
        cli.main(["prune", "--help"])
    out = capsys.readouterr().out
    assert "--sparsity" in out and "--epochs" in out and "fine-tun" in out
