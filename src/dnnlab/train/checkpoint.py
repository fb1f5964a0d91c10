"""Checkpoints: safetensors files whose header carries the JSON metadata.

One checkpoint is one file, written atomically, so a kill at any moment leaves the previous
checkpoint or the new one, never a pair out of step. Loading parses the safetensors header and
nothing else: no code path unpickles a file, so a planted pickle is refused without being run.

Everything read back is checked, and damage of any kind is one :class:`DnnlabError` naming the
file: the header carries a SHA-256 of the tensors and the metadata (``META_KEY + ".sha256"``),
so truncation and flipped bytes anywhere are caught; :func:`check_tensors` compares names,
shapes and dtypes against what the reader expects; :func:`check_meta` the metadata's keys and
types. Files written before the checksum existed load without it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from dnnlab import io
from dnnlab.config import ModelConfig, _build
from dnnlab.data.preprocessing import FILE as PREPROCESSING_FILE
from dnnlab.data.preprocessing import Preprocessing
from dnnlab.errors import CheckpointError, DnnlabError
from dnnlab.nn.mlp import build_mlp

META_KEY = "dnnlab"
MODEL_FILE = "model.safetensors"   # a run directory's final model (see load_model)
SUM_KEY = META_KEY + ".sha256"


def _digest(tensors: Mapping[str, torch.Tensor], meta_text: str) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, then the metadata text."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(meta_text.encode("utf-8"))
    return h.hexdigest()


def _damaged(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path} is damaged ({what}); delete it or re-create it with dnnlab")


def save(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and JSON ``meta`` as one safetensors file (atomic)."""
    flat = {k: t.detach().to("cpu").contiguous() for k, t in tensors.items()}
    meta_text = json.dumps(meta, default=io._json_default)
    data = st_save(flat, metadata={META_KEY: meta_text, SUM_KEY: _digest(flat, meta_text)})
    return io.write_bytes(path, data)


def load(path: str | Path, device: str | torch.device = "cpu", *,
         expect: Mapping[str, Any] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save`; anything else is refused with a clear error.

    The checksum is verified; ``expect`` (name -> tensor or shape), when given, is checked with
    :func:`check_tensors` (exactly those names, those shapes). Every failure names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({e.strerror or e})") from None
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError, OverflowError, RecursionError) as e:
        raise CheckpointError(f"{path} is not a safetensors checkpoint ({str(e)[:200]}); dnnlab never "
                          "unpickles files: re-create it with dnnlab, or delete it") from None
    extra = header.get("__metadata__") if isinstance(header, dict) else None
    meta_text = extra.get(META_KEY) if isinstance(extra, dict) else None
    if not isinstance(meta_text, str):
        raise CheckpointError(f"{path} is a safetensors file without dnnlab metadata; "
                          "it was not written by dnnlab")
    assert isinstance(extra, dict)                  # meta_text is a str: extra is the dict it came from
    stored = extra.get(SUM_KEY)
    if stored is not None and stored != _digest(tensors, meta_text):
        raise _damaged(path, "its checksum does not match its contents")
    try:
        meta = json.loads(meta_text)
    except (ValueError, RecursionError) as e:
        raise _damaged(path, f"its metadata is not valid JSON: {str(e)[:100]}") from None
    if not isinstance(meta, dict):
        raise _damaged(path, "its metadata is not a JSON object")
    if expect is not None:
        check_tensors(tensors, expect, path)
    if device != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta


def read_meta(path: str | Path) -> dict[str, Any]:
    """The dnnlab metadata of a checkpoint, from its header alone (the tensors are neither read
    nor checked: :func:`load` does that); a file without a readable header is
    :class:`CheckpointError` naming it. For checks of a whole folder, such as its run id."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 2 <= size <= 100 * 2**20:
                raise ValueError(f"a header of {size} bytes")
            header = json.loads(f.read(size))
        meta = json.loads(header["__metadata__"][META_KEY])
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({e.strerror or e})") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as e:
        raise _damaged(path, f"its header cannot be read: {str(e)[:100]}") from None
    if not isinstance(meta, dict):
        raise _damaged(path, "its metadata is not a JSON object")
    return meta


def _shape(spec: Any) -> tuple[int, ...]:
    return tuple(spec.shape) if hasattr(spec, "shape") else tuple(spec)


def check_tensors(tensors: Mapping[str, torch.Tensor], expected: Mapping[str, Any], path: str | Path,
                  *, prefix: str = "", exact: bool = True) -> None:
    """Check that ``tensors`` (under ``prefix``) holds exactly the names of ``expected``, each
    with the expected shape (and dtype, where ``expected`` holds tensors), all floats finite.

    ``expected`` maps a name to a tensor (e.g. ``model.state_dict()``) or a shape. With
    ``exact=False`` extra names are allowed. Raises :class:`CheckpointError` naming ``path`` and the
    first mismatch, so a reader never meets a bad shape deep inside ``load_state_dict``.
    """
    path = Path(path)
    have = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = [k for k in expected if k not in have]
    if missing:
        raise _damaged(path, f"tensor {prefix}{missing[0]} is missing"
                       + (f" ({len(missing)} in all)" if len(missing) > 1 else ""))
    if exact:
        extra = [k for k in have if k not in expected]
        if extra:
            raise _damaged(path, f"tensor {prefix}{extra[0]} is not expected there")
    for name, spec in expected.items():
        t = have[name]
        if tuple(t.shape) != _shape(spec):
            raise _damaged(path, f"tensor {prefix}{name} has shape {list(t.shape)}, expected "
                           f"{list(_shape(spec))}")
        if torch.is_tensor(spec) and t.dtype != spec.dtype:
            raise _damaged(path, f"tensor {prefix}{name} is {t.dtype}, expected {spec.dtype}")
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            raise _damaged(path, f"tensor {prefix}{name} holds NaN or infinite values")


def check_meta(meta: Mapping[str, Any], required: Mapping[str, type | tuple[type, ...]],
               path: str | Path) -> None:
    """Check that ``meta`` has every key of ``required``, each of the given type(s); numbers
    must be finite. Raises :class:`CheckpointError` naming ``path`` and the key."""
    for key, types_ in required.items():
        if key not in meta:
            raise _damaged(Path(path), f"metadata key {key!r} is missing")
        v = meta[key]
        ok = isinstance(v, types_) and not (isinstance(v, bool) and bool not in _as_tuple(types_))
        if not ok or (isinstance(v, float) and not math.isfinite(v)):
            raise _damaged(Path(path), f"metadata {key!r} = {str(v)[:40]!r} is not a valid "
                           f"{'/'.join(t.__name__ for t in _as_tuple(types_))}")


def _as_tuple(types_: type | tuple[type, ...]) -> tuple[type, ...]:
    return types_ if isinstance(types_, tuple) else (types_,)


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def save_model(model: torch.nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Save a model's weights with the config needed to rebuild it (see :func:`load_model`).

    ``path``: the ``.safetensors`` file to write (atomically); ``meta``: more JSON-ready
    metadata to store in its header (under ``"dnnlab"``).
    """
    info = dict(meta or {})
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(model, "in_features"):
        info.update(kind="mlp", model=dataclasses.asdict(cfg), in_features=model.in_features,
                    n_classes=model.n_classes)
    return save(path, model.state_dict(), info)


def save_final(model: torch.nn.Module, run_dir: str | Path, meta: dict[str, Any],
               preprocessing: Preprocessing | None) -> Path:
    """A run's final model: ``model.safetensors`` whose metadata carries the preprocessing record
    (``meta["preprocessing"]``), and the same record as ``preprocessing.json`` beside it, so the
    model travels with what a raw row needs (:mod:`dnnlab.data.preprocessing`)."""
    run_dir = Path(run_dir)
    if preprocessing is not None:
        record = preprocessing.to_json()
        io.write_json(run_dir / PREPROCESSING_FILE, record)
        meta = {**meta, "preprocessing": record}
    return save_model(model, run_dir / MODEL_FILE, meta)


def model_file(path: str | Path) -> Path:
    """The model file ``path`` names: the file itself, or a run directory's ``model.safetensors``.

    Users hold run directories (``dnnlab train`` prints one), so every reader of a model takes
    either; a directory without the file is one error saying which file was looked for.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    if not (path / MODEL_FILE).is_file():
        raise DnnlabError(f"{path} holds no {MODEL_FILE}; pass the directory of a finished "
                          "`dnnlab train` run (or a sweep's variant directory), or a model file")
    return path / MODEL_FILE


def load_model(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild an MLP saved with :func:`save_model` and load its weights.

    Args:
        path: a model file, or a run directory (its ``model.safetensors``, the final model).
        device: where the model goes (default the CPU).

    The description (config, sizes) and every tensor's name and shape are checked before any
    weight is loaded; a damaged or hand-edited file is one error naming it. The model on raw
    rows, with its preprocessing and class names: :func:`dnnlab.predict.load_model`.
    """
    return load_model_meta(path, device)[0]


def load_model_meta(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """:func:`load_model`, and the metadata saved with the model."""
    path = model_file(path)
    tensors, meta = load(path)
    if meta.get("kind") != "mlp":
        raise DnnlabError(f"{path} holds weights without an MLP description; load it with "
                          "dnnlab.train.checkpoint.load and your own module")
    check_meta(meta, {"model": dict, "in_features": int, "n_classes": int}, path)
    if not (1 <= meta["in_features"] <= 2**24 and 2 <= meta["n_classes"] <= 10**6):
        raise _damaged(path, f"in_features={meta['in_features']}, n_classes={meta['n_classes']} "
                       "are out of range")
    try:
        cfg = _build(ModelConfig, meta["model"], "model")
    except DnnlabError as e:
        raise _damaged(path, f"its model description is invalid: {e}") from None
    model = build_mlp(cfg, meta["in_features"], meta["n_classes"])
    check_tensors(tensors, model.state_dict(), path)
    model.load_state_dict(tensors)
    return model.to(device), meta
