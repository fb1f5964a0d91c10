"""The CIFAR-10 study's plan: the ablation ladder on the book's network, data and protocol.

The protocol is the book's solution to exercise 8 of chapter 11: 45,000 training images (the
first 5,000 are the validation set), batch 32, up to 100 epochs, early stopping on the validation
loss with patience 20 and the best weights restored; raw pixels (scaled to [0, 1]) for the He/ELU
nets, standardized inputs for the SELU nets. The base network is 20 x 100 dense, He normal, ELU,
Nadam. ``--quick`` keeps every stage of the pipeline and shrinks the data and the epochs so that
CI can check the pipeline and the report in a minute.
"""

from __future__ import annotations

from dnnlab.config import RunConfig, from_dict
from dnnlab.studies.ablation import plan as ladder
from dnnlab.studies.ablation.plan import FULL, LR_GRID, QUICK, TRAINED, VARIANTS, Protocol, protocol

# The book's validation accuracy (its single runs), as (low, high).
BOOK = {"baseline": (0.476, 0.476), "batchnorm": (0.540, 0.540), "selu": (0.479, 0.514),
        "alpha_dropout": (0.489, 0.508), "mc_dropout": (0.489, 0.509),
        "one_cycle": (0.520, 0.528)}
TITLES = {**ladder.TITLES, "baseline": "(b) He + ELU + Nadam"}


def base_config(data_dir: str | None = None) -> RunConfig:
    """The exercise's network (a-b) on CIFAR-10: the ladder's baseline."""
    data: dict = {"name": "cifar10"}
    if data_dir is not None:
        data["data_dir"] = str(data_dir)
    return from_dict({"name": "cifar10", "data": data,
                      "model": {"depth": 20, "width": 100, "activation": "elu",
                                "init": "he_normal"},
                      "optim": {"name": "nadam"}})


def variant_config(variant: str, proto: Protocol, *, lr: float = 1e-3, dropout: float = 0.1,
                   max_lr: float | None = None, device: str = "auto",
                   data_dir: str | None = None) -> RunConfig:
    """The config one variant of the CIFAR-10 study is trained with."""
    return ladder.variant_config(base_config(data_dir), variant, proto, lr=lr, dropout=dropout,
                                 max_lr=max_lr, device=device)


__all__ = ["BOOK", "FULL", "LR_GRID", "QUICK", "TITLES", "TRAINED", "VARIANTS", "Protocol",
           "base_config", "protocol", "variant_config"]
