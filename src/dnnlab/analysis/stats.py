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

Dead and saturated units are judged on the output of the activation function itself (the first
leaf after the ``nn.Linear`` that is not batch norm or dropout), so a batch norm placed after the
activation, or dropout zeroing units at random, does not hide or fake them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dnnlab.errors import DnnlabError

# A unit's output is *saturated* where the activation's derivative is under SATURATION_DERIVATIVE
# of its peak: the chapter's flat tails, which pass almost no gradient back. 4% is where sigmoid's
# output is under 0.0102 or over 0.9898, tanh's |output| over 0.98, and ELU's output within 0.04
# of -alpha. The derivative is read off the output (no second pass): sigmoid' = a (1 - a),
# tanh' = 1 - a^2, ELU' = a + alpha and SELU' = a + scale * alpha on the negative side.
# ReLU's zeros are not saturation (the derivative is exactly 0 by design); a unit that is always
# 0 is counted as *dead*.
SATURATION_DERIVATIVE = 0.04
_SELU_SCALE, _SELU_ALPHA = 1.0507009873554805, 1.6732632423543772
# Leaves that follow an activation without being one: skipped when looking for the activation.
_NOT_ACTIVATION = (nn.BatchNorm1d, nn.Dropout, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _relative_derivative(a: torch.Tensor, module: nn.Module) -> torch.Tensor | None:
    """The activation's derivative at each output ``a``, divided by its peak (None if unknown)."""
    if isinstance(module, nn.Sigmoid):
        return a * (1 - a) / 0.25
    if isinstance(module, nn.Tanh):
        return 1 - a * a
    if isinstance(module, nn.ELU):
        return torch.where(a < 0, a + module.alpha, torch.ones_like(a))
    if isinstance(module, nn.SELU):
        return torch.where(a < 0, a + _SELU_SCALE * _SELU_ALPHA, torch.full_like(a, _SELU_SCALE)) \
            / _SELU_SCALE
    return None


def saturated_fraction(values: torch.Tensor, module: nn.Module) -> float:
    """Share of the outputs of ``module`` (an activation) that sit in its flat, saturated tails.

    0.0 for activations without saturating tails (ReLU's zeros are *dead*, counted by ``dead``).
    """
    rel = _relative_derivative(values.detach().double(), module)
    if rel is None:
        return 0.0
    return float((rel < SATURATION_DERIVATIVE).double().mean())


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if not list(m.children())]


def layer_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
                train: bool = False, tensors: bool = False) -> list[dict]:
    """Per dense layer: ``layer`` (1-based), ``name``, ``units``, ``mean`` and ``std`` of its
    activation over the batch and units, ``dead`` (fraction of units whose activation function
    outputs exactly 0 for every input in ``x``: dead ReLUs), ``saturated`` (share of the
    activation function's outputs in a bounded activation's flat tails, see
    :func:`saturated_fraction`), ``constant`` (fraction of units whose output is the same
    for every input, whatever the value: dead or saturated units of any activation), ``output``
    (True for the last layer), ``grad_norm`` and ``grad_rms`` (the L2 norm and the RMS of the
    kernel's gradient of the mean cross-entropy on ``(x, y)``) and ``out_grad_rms`` (the RMS of
    that loss's gradient with respect to the layer's activation: the back-propagated signal);
    the gradients are None without ``y``. With ``tensors=True`` each row also holds the raw
    ``values`` (the activation), ``weight`` and ``grad`` (the kernel and its gradient) tensors,
    detached, for histograms.

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
            starts = [i for i, (_, m, _) in enumerate(records) if isinstance(m, nn.Linear)]
            ends = [starts[k + 1] - 1 if k + 1 < len(starts) else len(records) - 1
                    for k in range(len(starts))]
            kernels = [records[i][1].weight for i in starts]
            outputs = [records[i][2] for i in ends]
            grads: list[torch.Tensor | None] = [None] * len(starts)
            out_grads: list[torch.Tensor | None] = [None] * len(starts)
            if y is not None:
                loss = F.cross_entropy(logits, y)
                want = [(grads, k, w) for k, w in enumerate(kernels) if w.requires_grad]
                want += [(out_grads, k, o) for k, o in enumerate(outputs) if o.requires_grad]
                got = torch.autograd.grad(loss, [t for _, _, t in want], allow_unused=True)
                for (slot, k, _), g in zip(want, got):
                    slot[k] = g
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        if saved_bn:
            model.load_state_dict(saved_bn, strict=False)

    out = []
    for k, (start, end) in enumerate(zip(starts, ends)):
        name, linear, _ = records[start]
        act = outputs[k].detach().double()
        fn = next((records[i] for i in range(start + 1, end + 1)
                   if not isinstance(records[i][1], _NOT_ACTIVATION)), records[start])
        fn_out = fn[2].detach()
        g, og = grads[k], out_grads[k]
        row = {
            "layer": k + 1,
            "name": name,
            "units": int(linear.out_features),
            "mean": float(act.mean()),
            "std": float(act.std()),
            "dead": float((fn_out == 0).all(0).double().mean()),
            "saturated": saturated_fraction(fn_out, fn[1]),
            "constant": float((act.amax(0) - act.amin(0) <= 1e-6 * (1 + act.abs().amax(0)))
                              .double().mean()),
            "output": k + 1 == len(starts),
            # float64: exploding nets reach 1e27, whose square overflows float32
            "grad_norm": float(g.double().norm()) if g is not None else None,
            "grad_rms": float(g.double().square().mean().sqrt()) if g is not None else None,
            "out_grad_rms": float(og.double().square().mean().sqrt()) if og is not None else None,
        }
        if tensors:
            row.update(values=outputs[k].detach(), weight=linear.weight.detach(),
                       grad=g.detach() if g is not None else None)
        out.append(row)
    return out


def hidden_stats(stats: list[dict]) -> list[dict]:
    """The hidden layers only (drops the output layer's row)."""
    return [s for s in stats if not s["output"]]
