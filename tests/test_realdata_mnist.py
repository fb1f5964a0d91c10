"""Real-data smoke test that CI always runs: MNIST ships inside the package."""

from dnnlab.config import load_config, replace
from dnnlab.data import load_from_config
from dnnlab.train import fit


def test_5x100_he_elu_nadam_reaches_97_percent_on_digits_0_to_4_within_5_epochs(tmp_path):
    cfg = replace(load_config(None), **{
        "data.name": "mnist", "data.classes": [0, 1, 2, 3, 4], "model.depth": 5,
        "model.width": 100, "model.activation": "elu", "model.init": "he_normal",
        "optim.name": "nadam", "optim.lr": 1e-3, "train.epochs": 5, "train.batch_size": 32,
        "train.progress": False, "train.device": "cpu"})
    data = load_from_config(cfg.data, progress=False)
    # digits 0-4 kept first, then the book's first 5,000 (of them) validate
    assert (len(data.train), len(data.valid), data.n_classes) == (25_596, 5_000, 5)
    res = fit(cfg, data, tmp_path / "run")
    assert res.epochs_run <= 5
    assert max(res.history["val_accuracy"]) >= 0.97
    assert res.test["test_accuracy"] >= 0.97
