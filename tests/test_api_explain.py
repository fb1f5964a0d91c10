"""dnnlab.explain(config=..., data=...) does what `dnnlab explain --config` does: the config's
whole [data] table reaches the topics."""

import pytest

import dnnlab
from dnnlab.studies import explain as explain_pkg


def test_explain_passes_the_configs_data_table_as_written(tmp_path, monkeypatch):
    seen = {}

    def fake_run_topics(topics, out, **kw):
        seen.update(kw, topics=topics, out=out)
        return {}

    monkeypatch.setattr(explain_pkg, "run_topics", fake_run_topics)
    monkeypatch.delitem(vars(dnnlab), "run_topics", raising=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\nstandardize = true\nlimit = 300\n')
    dnnlab.explain("symmetry", tmp_path / "out", quick=True, config=cfg)
    assert seen["data"].name == "synthetic" and seen["data"].standardize is True
    assert seen["data"].limit == 300 and seen["out"] == tmp_path / "out"
    run_cfg = dnnlab.load_config(cfg)
    dnnlab.explain("symmetry", tmp_path / "out", config=run_cfg)
    assert seen["data"] == run_cfg.data


def test_explain_refuses_config_and_data_together(tmp_path):
    cfg = dnnlab.load_config(None)
    with pytest.raises(dnnlab.DnnlabError, match="config= or data=, not both"):
        dnnlab.explain("symmetry", tmp_path, config=cfg, data=cfg.data)
