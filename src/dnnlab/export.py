"""Export a trained model for other runtimes: ``dnnlab export RUN_DIR --format onnx``.

The model of a run directory (``model.safetensors``, rebuilt by
:func:`dnnlab.train.checkpoint.load_model`) is written as an ONNX graph in inference mode:
dropout and alpha dropout are identities, batch norm uses its moving statistics, RReLU its mean
slope. The graph takes ``input`` of shape (batch, n_features), float32, prepared as the run's
data was (pixels scaled to [0, 1], and standardized when ``data.standardize`` was set), and
returns the class ``logits`` (apply a softmax for probabilities), with a free batch size.

The exporter is torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``): it
needs only the ``onnx`` package, where the newer torch.export-based exporter (torch's default
since 2.9) also needs ``onnxscript``; for a plain MLP both give the same graph. After writing, the
file is checked with ``onnx.checker`` and run with onnxruntime against dnnlab's own outputs.
``onnx`` and ``onnxruntime`` are optional dependencies: ``pip install 'dnnlab[export]'``.
"""

from __future__ import annotations

import importlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dnnlab.errors import DnnlabError
from dnnlab.io import write_bytes
from dnnlab.train.checkpoint import load_model

FORMATS = ("onnx",)
OPSET = 17              # ONNX opset 17 (2022): every op an MLP uses, read by onnxruntime >= 1.12
MODEL_FILE = "model.safetensors"
INSTALL_HINT = "pip install 'dnnlab[export]' (or: pip install onnx onnxruntime)"


def _require(package: str):
    """Import an optional dependency, or fail in one line that says how to install it."""
    try:
        # optional, heavy dependencies: imported only when an export is asked for
        return importlib.import_module(package)
    except ImportError:
        raise DnnlabError(f"exporting to ONNX needs the '{package}' package, which is not "
                          f"installed; {INSTALL_HINT}") from None


def to_onnx_bytes(model: nn.Module, n_features: int, *, opset: int = OPSET) -> bytes:
    """The ONNX graph of ``model`` in inference mode, as bytes (the model's mode is restored).

    Args:
        model: any module mapping (batch, n_features) float32 to logits; dnnlab's MLP included.
        n_features: the width of the input rows.
        opset: the ONNX operator-set version (default 17).
    """
    _require("onnx")
    was_training = model.training
    model.eval()
    example = torch.zeros(2, int(n_features))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():   # the TorchScript exporter warns that it is the old one
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              training=torch.onnx.TrainingMode.EVAL, do_constant_folding=True)
    finally:
        model.train(was_training)
    return buf.getvalue()


def onnx_logits(model_bytes: bytes | str | Path, x: np.ndarray) -> np.ndarray:
    """Run an exported graph with onnxruntime (CPU) on rows ``x``; returns its logits."""
    ort = _require("onnxruntime")
    source = str(model_bytes) if isinstance(model_bytes, Path) else model_bytes
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": np.ascontiguousarray(x, dtype=np.float32)})[0]


def max_difference(model: nn.Module, model_bytes: bytes | str | Path, x: np.ndarray) -> float:
    """The largest absolute difference between dnnlab's logits (eval mode) and onnxruntime's."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ours = model(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy()
    finally:
        model.train(was_training)
    return float(np.max(np.abs(ours - onnx_logits(model_bytes, x))))


def probe_rows(n_features: int, n: int = 256, seed: int = 0) -> np.ndarray:
    """Deterministic test inputs: half pixel-like (uniform in [0, 1]), half standardized (N(0, 1))."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random((n // 2, n_features)),
                           rng.standard_normal((n - n // 2, n_features))]).astype(np.float32)


def export_model(model: nn.Module, path: str | Path, n_features: int, *, opset: int = OPSET,
                 atol: float = 1e-5) -> tuple[Path, float]:
    """Write ``model`` as ONNX to ``path`` (atomically), check it, and verify it with onnxruntime.

    The graph must pass ``onnx.checker`` and give dnnlab's logits on :func:`probe_rows` within
    ``atol`` (default 1e-5); otherwise nothing is written and a ``DnnlabError`` says by how much
    they differ. Returns the path and the largest difference measured.
    """
    onnx = _require("onnx")
    data = to_onnx_bytes(model, n_features, opset=opset)
    try:
        onnx.checker.check_model(onnx.load_from_string(data))
    except onnx.checker.ValidationError as e:
        raise DnnlabError(f"the exported ONNX graph is invalid ({str(e).splitlines()[0]}); "
                          f"try another --opset") from None
    diff = max_difference(model, data, probe_rows(n_features))
    if not diff <= atol:
        raise DnnlabError(f"onnxruntime's outputs differ from dnnlab's by up to {diff:.3g} "
                          f"(tolerance {atol:g}); the model was not exported, report this as a bug")
    return write_bytes(Path(path), data), diff


def export_run(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None, *,
               opset: int = OPSET) -> tuple[Path, float]:
    """Export the final model of a ``dnnlab train`` (or sweep variant) run directory.

    Args:
        run_dir: a directory holding ``model.safetensors``.
        fmt: the format; only ``"onnx"`` today.
        out: the output file (default ``RUN_DIR/model.onnx``).
        opset: the ONNX operator-set version (default 17).

    Returns the written path and the largest difference between onnxruntime's logits and
    dnnlab's on the probe rows (see :func:`export_model`).
    """
    if fmt not in FORMATS:
        raise DnnlabError(f"--format {fmt!r} is not supported; choose one of: {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    source = run_dir / MODEL_FILE
    if not run_dir.is_dir():
        raise DnnlabError(f"run directory {run_dir} does not exist; pass a directory written by "
                          "`dnnlab train`")
    if not source.is_file():
        raise DnnlabError(f"{run_dir} holds no {MODEL_FILE}; pass the directory of a finished "
                          "`dnnlab train` run (or a sweep's variant directory)")
    _require("onnx")
    _require("onnxruntime")
    model = load_model(source)
    target = Path(out) if out is not None else run_dir / "model.onnx"
    return export_model(model, target, model.in_features, opset=opset)


__all__ = ["FORMATS", "OPSET", "export_model", "export_run", "max_difference", "onnx_logits",
           "probe_rows", "to_onnx_bytes"]
