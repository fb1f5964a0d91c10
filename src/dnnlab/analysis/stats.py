"""Layer statistics: what the signal and the gradient look like at each dense layer of an MLP.

Answers the chapter's questions about unstable gradients by measurement: does the activation
std stay near 1 through depth (Glorot/He, SELU's self-normalization), do gradient norms vanish
or explode toward the input, how many ReLU units are dead.

The statistics are taken with forward hooks, so any ``nn.Module`` built from ``nn.Linear``
layers works, not only dnnlab's MLP. A layer's *activation* is the output of the last leaf
module that runs after its ``nn.Linear`` and before the next one: for dnnlab's blocks that is
the activation, or the batch norm / dropout that follows it, i.e. what the next layer receives.
The last ``nn.Linear`` is the output layer; its "activation" is the logits.

Gradients are taken with ``torch.autograd.grad`` on the dense kernels, so the model's ``.grad``
fields (and an optimizer's view of them) are left untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dnnlab.errors import DnnlabError


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if not list(m.children())]


def layer_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
                train: bool = False) -> list[dict]:
    """Per dense layer: ``layer`` (1-based), ``name``, ``units``, ``mean`` and ``std`` of its
    activation over the batch and units, ``dead`` (fraction of units that output exactly 0 for
    every input in ``x``), ``output`` (True for the last layer) and ``grad_norm`` (the L2 norm of
    the kernel's gradient of the mean cross-entropy on ``(x, y)``; None without ``y``).

    The model runs in eval mode unless ``train=True`` (dropout active, batch norm on batch
    statistics, e.g. to measure alpha dropout's effect on self-normalization); its mode is
    restored afterwards and, in train mode, so are batch-norm running statistics.
    """
    leaves = _leaves(model)
    if not any(isinstance(m, nn.Linear) for _, m in leaves):
        raise DnnlabError(f"layer_stats needs a model made of nn.Linear layers; "
                          f"{type(model).__name__} has none")
    records: list[tuple[str, nn.Module, torch.Tensor]] = []

    def hook(module, _inputs, output, name=None):
        records.append((name, module, output))

    handles = [m.register_forward_hook(lambda mod, i, o, name=name: hook(mod, i, o, name))
               for name, m in leaves]
    was_training = model.training
    saved_bn = ({k: v.detach().clone() for k, v in model.state_dict().items()
                 if "running_" in k or "num_batches_tracked" in k} if train else {})
    model.train(train)
    try:
        with torch.enable_grad():
            logits = model(x)
            kernels = [m.weight for _, m, _ in records if isinstance(m, nn.Linear)]
            grads: list[torch.Tensor | None] = [None] * len(kernels)
            if y is not None:
                loss = F.cross_entropy(logits, y)
                wanted = [i for i, w in enumerate(kernels) if w.requires_grad]
                got = torch.autograd.grad(loss, [kernels[i] for i in wanted], allow_unused=True)
                for i, g in zip(wanted, got):
                    grads[i] = g
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        if saved_bn:
            model.load_state_dict(saved_bn, strict=False)

    starts = [i for i, (_, m, _) in enumerate(records) if isinstance(m, nn.Linear)]
    out = []
    for k, start in enumerate(starts):
        stop = starts[k + 1] if k + 1 < len(starts) else len(records)
        name, linear, _ = records[start]
        act = records[stop - 1][2].detach().float()
        g = grads[k]
        out.append({
            "layer": k + 1,
            "name": name,
            "units": int(linear.out_features),
            "mean": float(act.mean()),
            "std": float(act.std()),
            "dead": float((act == 0).all(0).float().mean()),
            "output": k + 1 == len(starts),
            "grad_norm": float(g.norm()) if g is not None else None,
        })
    return out


def hidden_stats(stats: list[dict]) -> list[dict]:
    """The hidden layers only (drops the output layer's row)."""
    return [s for s in stats if not s["output"]]
