"""Shared test fixtures: tiny generated data, and the real datasets when they are present."""

import os
from pathlib import Path

import pytest
import torch

# Tests use small tensors, where a second thread buys nothing and, on a busy 2-core machine,
# costs up to 100x in spinning threads. Subprocesses that tests start inherit the same setting.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def real_data_dir() -> Path | None:
    env = os.environ.get("DNNLAB_DATA_DIR")
    for d in (Path(env) if env else None, SHARED_DATA):
        if d is not None and (d / "mnist.npz").exists():
            return d
    return None


@pytest.fixture
def data_dir() -> Path:
    d = real_data_dir()
    if d is None:
        pytest.skip("real datasets not found: set DNNLAB_DATA_DIR or put ../shared/data beside "
                    "the checkout")
    return d


@pytest.fixture
def tiny():
    from dnnlab.data import synthetic
    return synthetic(n_train=512, n_valid=128, n_test=128, n_features=12, n_classes=3, seed=0)


@pytest.fixture
def tiny_cfg():
    from dnnlab.config import RunConfig, replace
    return replace(RunConfig(), **{"model.depth": 2, "model.width": 16, "train.epochs": 3,
                                   "train.batch_size": 32, "train.progress": False,
                                   "train.patience": None, "train.device": "cpu",
                                   "data.name": "synthetic"})


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run wherever a GPU is visible and are skipped, saying so, elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device is visible (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
