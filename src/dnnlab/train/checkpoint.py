"""Checkpoints: safetensors files whose header carries the JSON metadata.

One checkpoint is one file, written atomically, so a kill at any moment leaves the previous
checkpoint or the new one, never a pair out of step. Loading parses the safetensors header and
nothing else: no code path unpickles a file, so a planted pickle is refused without being run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from dnnlab import io
from dnnlab.errors import DnnlabError

META_KEY = "dnnlab"


def save(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and JSON ``meta`` as one safetensors file (atomic)."""
    flat = {k: t.detach().to("cpu").contiguous() for k, t in tensors.items()}
    data = st_save(flat, metadata={META_KEY: json.dumps(meta, default=io._json_default)})
    return io.write_bytes(path, data)


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save`; anything else is refused with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise DnnlabError(f"checkpoint {path} not found")
    raw = path.read_bytes()
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError, OverflowError) as e:
        raise DnnlabError(f"{path} is not a safetensors checkpoint ({e}); dnnlab never unpickles "
                          "files: re-create it with dnnlab, or delete it") from None
    meta_text = (header.get("__metadata__") or {}).get(META_KEY)
    if meta_text is None:
        raise DnnlabError(f"{path} is a safetensors file without dnnlab metadata; "
                          "it was not written by dnnlab")
    meta = json.loads(meta_text)
    if device != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able rest."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                        meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, extra in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(extra)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_model(model: torch.nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Save a model's weights with the config needed to rebuild it (see :func:`load_model`)."""
    info = dict(meta or {})
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(model, "in_features"):
        import dataclasses
        info.update(kind="mlp", model=dataclasses.asdict(cfg), in_features=model.in_features,
                    n_classes=model.n_classes)
    return save(path, model.state_dict(), info)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild an MLP saved with :func:`save_model` and load its weights."""
    from dnnlab.config import ModelConfig, _build
    from dnnlab.nn.mlp import build_mlp
    tensors, meta = load(path)
    if meta.get("kind") != "mlp":
        raise DnnlabError(f"{path} holds weights without an MLP description; load it with "
                          "dnnlab.train.checkpoint.load and your own module")
    cfg = _build(ModelConfig, meta["model"], "model")
    model = build_mlp(cfg, meta["in_features"], meta["n_classes"])
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise DnnlabError(f"{path} does not match its own config (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}); the file is damaged")
    return model.to(device)
