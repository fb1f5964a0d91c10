"""What a newcomer met in the first hour (issue 21), each checked as the user meets it."""

import pytest
import torch

import dnnlab
from dnnlab.config import ModelConfig
from dnnlab.errors import DnnlabError
from dnnlab.nn.mlp import build_mlp
from dnnlab.train.checkpoint import save_model


def test_load_model_takes_a_run_directory_or_its_file(tmp_path):
    model = build_mlp(ModelConfig(depth=2, width=8), 5, 3, seed=1)
    path = save_model(model, tmp_path / "run" / "model.safetensors")
    x = torch.randn(4, 5)
    for where in (tmp_path / "run", str(tmp_path / "run"), path):
        again = dnnlab.load_model(where).eval()
        torch.testing.assert_close(again(x), model.eval()(x), rtol=0, atol=0)


def test_load_model_of_a_folder_without_a_model_names_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DnnlabError, match=r"empty holds no model.safetensors; pass the directory "
                                          r"of a finished `dnnlab train` run"):
        dnnlab.load_model(tmp_path / "empty")
    with pytest.raises(DnnlabError, match="checkpoint .*missing.safetensors not found"):
        dnnlab.load_model(tmp_path / "missing.safetensors")
