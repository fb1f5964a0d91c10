"""Export a trained model for other runtimes: ``dnnlab export RUN_DIR --format onnx``.

The model of a run directory (``model.safetensors``, rebuilt by
:func:`dnnlab.predict.load_model` with its preprocessing record) is written as an ONNX graph in
inference mode: dropout and alpha dropout are identities, batch norm uses its moving statistics,
RReLU its mean slope. The graph takes ``input`` of shape (batch, n_features), float32, a *raw*
row: the run's preprocessing is the graph's first nodes (divide by the pixel scale, subtract the
training split's mean, divide by its std: :class:`Prepared`), and returns the class ``logits``
(apply a softmax for probabilities), with a free batch size. The model's ``metadata_props`` hold
``class_names`` (output k is class_names[k]) and, for a table, ``feature_names`` (the input's
columns in order), both JSON lists, and the whole record as ``dnnlab.preprocessing``.

The exporter is torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``): it
needs only the ``onnx`` package, where the newer torch.export-based exporter (torch's default
since 2.9) also needs ``onnxscript``; for a plain MLP both give the same graph. After writing, the
file is checked with ``onnx.checker`` and run with onnxruntime against dnnlab's own outputs on
real rows: the first test rows of the run's data, loaded as its ``config.toml`` says, turned back
into raw rows. The two must agree to within float32 rounding, which scales with the logits (see
:func:`tolerance`). ``onnx`` and ``onnxruntime`` are optional dependencies: ``pip install -e
'.[export]'`` in the checkout.
"""

from __future__ import annotations

import importlib
import io
import json
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from dnnlab import rundir
from dnnlab.config import load_config
from dnnlab.data import load_from_config
from dnnlab.data.preprocessing import Preprocessing
from dnnlab.errors import DnnlabError
from dnnlab.io import write_bytes
from dnnlab.predict import load_model
from dnnlab.train.state import Record, check_data, check_run

FORMATS = ("onnx",)
OPSET = 17              # ONNX opset 17 (2022): every op an MLP uses, read by onnxruntime >= 1.12
# The opsets an export can use: onnxruntime has no kernel for Gemm (a Linear layer) before opset 7,
# and torch's TorchScript exporter writes up to 20 (beyond, it warns that it does not support them).
OPSETS = range(7, 21)
INSTALL_HINT = "pip install -e '.[export]' in the dnnlab checkout (or: pip install onnx onnxruntime)"
CHECK_ROWS = 500        # test rows of the run's data the export is checked on
EPS32 = float(np.finfo(np.float32).eps)
# Two float32 implementations of one network differ by rounding alone: each dot product sums its
# terms in another order (blocking, FMA, threads), which moves the result by a few float32 epsilons
# times the magnitude of what was accumulated, and each layer passes the differences on. So the
# tolerance is relative: TOLERANCE_EPS epsilons times the largest |logit| (at least 1, because the
# hidden activations of inputs in [0, 1] or standardized are of order 1 even where the logits are
# small). Measured on the README's 5 x 100 ELU model (logits up to 28): 2.3 epsilons of it on its
# test rows (4.1 on random rows), at 1 and 2 threads; scaling its head's weights by 1.001 already
# moves the logits by 7,400 epsilons, and a broken export (batch norm on batch statistics, dropout
# left on, a wrong slope) by a good fraction of their size.
TOLERANCE_EPS = 64


class Prepared(nn.Module):
    """``model`` behind its preprocessing: raw rows in, logits out (what the ONNX graph holds).

    The same float32 steps, in the same order, as :meth:`Preprocessing.apply` and the loader:
    ``(x / scale - mean) / std``.
    """

    def __init__(self, model: nn.Module, pre: Preprocessing):
        super().__init__()
        self.model = model
        self.in_features = pre.n_features
        self.register_buffer("scale", torch.tensor(pre.scale, dtype=torch.float32))
        standardize = pre.mean is not None and pre.std is not None
        self.standardize = standardize
        n = pre.n_features
        self.register_buffer("mean", torch.as_tensor(pre.mean if standardize else np.zeros(n, np.float32)))
        self.register_buffer("std", torch.as_tensor(pre.std if standardize else np.ones(n, np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / self.scale
        if self.standardize:
            x = (x - self.mean) / self.std
        return self.model(x)


def raw_rows(pre: Preprocessing, prepared: np.ndarray) -> np.ndarray:
    """Prepared rows turned back into raw ones (the inverse of the preprocessing, in float32)."""
    x = np.array(prepared, dtype=np.float32)
    if pre.mean is not None and pre.std is not None:
        x = x * pre.std + pre.mean
    return x * np.float32(pre.scale)


def metadata(pre: Preprocessing) -> dict[str, str]:
    """The ONNX model's ``metadata_props``: JSON text (ONNX metadata is string to string)."""
    props = {"class_names": json.dumps(list(pre.class_names)), "dnnlab.preprocessing": pre.dumps()}
    if pre.feature_names is not None:
        props["feature_names"] = json.dumps(list(pre.feature_names))
    return props


class Verified(NamedTuple):
    """What :func:`export_model` wrote and how closely onnxruntime reproduced dnnlab."""
    path: Path
    diff: float        # the largest |onnxruntime's logit - dnnlab's| over the checked rows
    tolerance: float   # what it was allowed (see tolerance())
    rows: int          # how many rows were checked


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
        opset: the ONNX operator-set version (default 17; one of ``OPSETS``).
    """
    if opset not in OPSETS:
        raise DnnlabError(f"--opset {opset} is not supported; choose an ONNX opset from "
                          f"{OPSETS.start} to {OPSETS.stop - 1} (default {OPSET})")
    _require("onnx")
    was_training = model.training
    model.eval()
    example = torch.zeros(2, int(n_features))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():   # the TorchScript exporter warns that it is the old one,
            warnings.simplefilter("ignore", DeprecationWarning)   # and below opset 9 that it keeps
            warnings.filterwarnings("ignore", "Setting 'keep_initializers_as_inputs")  # weights as inputs
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


def dnnlab_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's logits on rows ``x`` in inference mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy()
    finally:
        model.train(was_training)


def tolerance(logits: np.ndarray) -> float:
    """How far another float32 runtime may stray from ``logits``: TOLERANCE_EPS float32
    epsilons times the largest |logit|, at least 1 (the reasoning is at TOLERANCE_EPS)."""
    scale = float(np.max(np.abs(logits), initial=1.0))
    return TOLERANCE_EPS * EPS32 * scale


def export_model(model: nn.Module, path: str | Path, x: np.ndarray, *,
                 opset: int = OPSET, props: dict[str, str] | None = None) -> Verified:
    """Write ``model`` as ONNX to ``path`` (atomically), check it, and verify it with onnxruntime.

    Args:
        model: any module mapping (batch, n_features) float32 rows to logits.
        path: the output file.
        x: the rows the export is verified on (N, n_features), prepared as the model's training
            data was: real rows, because random ones reach logits (and roundings) the model
            never meets.
        opset: the ONNX operator-set version (default 17; one of ``OPSETS``).
        props: the model's ``metadata_props`` (string to string), e.g. :func:`metadata`.

    The graph must pass ``onnx.checker`` and give dnnlab's logits on ``x`` within
    :func:`tolerance`; otherwise nothing is written and a ``DnnlabError`` says by how much they
    differ.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    onnx = _require("onnx")
    data = to_onnx_bytes(model, x.shape[1], opset=opset)
    try:
        proto = onnx.load_from_string(data)
        if props:
            onnx.helper.set_model_props(proto, props)
            data = proto.SerializeToString()
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise DnnlabError(f"the exported ONNX graph is invalid ({str(e).splitlines()[0]}); "
                          f"try another --opset") from None
    ours = dnnlab_logits(model, x)
    diff = float(np.max(np.abs(ours - onnx_logits(data, x))))
    tol = tolerance(ours)
    if not diff <= tol:
        raise DnnlabError(f"onnxruntime's logits differ from dnnlab's by up to {diff:.3g} on "
                          f"{len(x)} rows (tolerance {tol:.3g}, {TOLERANCE_EPS} float32 epsilons "
                          f"of the largest logit); the model was not exported, report this as a bug")
    return Verified(write_bytes(Path(path), data), diff, tol, len(x))


def check_rows(run_dir: str | Path, n: int = CHECK_ROWS, record: Record | None = None) -> np.ndarray:
    """The first ``n`` test rows of a run's data, prepared as the run's were (its ``[data]``);
    with the run's ``record``, the data must be the arrays it recorded (:func:`check_data`)."""
    run_dir = Path(run_dir)
    config = run_dir / "config.toml"
    if not config.is_file():
        raise DnnlabError(f"{run_dir} holds no config.toml, which names the data the export is "
                          "checked on; pass the directory of a `dnnlab train` run (or a sweep's "
                          "variant directory)")
    data = load_from_config(load_config(config).data, progress=False)
    check_data(run_dir, record, data.fingerprint())
    return data.test.x[:n]


def export_run(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None, *,
               opset: int = OPSET, accept_legacy: bool = False) -> Verified:
    """Export the final model of a ``dnnlab train`` (or sweep variant) run directory, its
    preprocessing in the graph (the input is a raw row) and its class names in the metadata.

    Args:
        run_dir: a directory holding ``model.safetensors`` and ``config.toml``.
        fmt: the format; only ``"onnx"`` today.
        out: the output file (default ``RUN_DIR/model.onnx``).
        opset: the ONNX operator-set version (default 17).

    The export is verified on the first ``CHECK_ROWS`` test rows of the run's data (see
    :func:`export_model`); returns what was written and how closely it matched.
    """
    if fmt not in FORMATS:
        raise DnnlabError(f"--format {fmt!r} is not supported; choose one of: {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DnnlabError(f"run directory {run_dir} does not exist; pass a directory written by "
                          "`dnnlab train`")
    record = check_run(run_dir, accept_legacy=accept_legacy)   # the folder is the run it says
    # held: a run still training has no final model yet, and model.onnx is written into the run
    with rundir.hold(run_dir, wait="export it when its training has ended"):
        trained = load_model(run_dir)
        _require("onnx")
        _require("onnxruntime")
        x = check_rows(run_dir, record=record)
        if x.shape[1] != trained.n_features_in_:
            raise DnnlabError(f"{run_dir}: its model takes {trained.n_features_in_} features but "
                              f"the data its config.toml names has {x.shape[1]}; the run "
                              "directory was edited")
        target = Path(out) if out is not None else run_dir / "model.onnx"
        pre = trained.preprocessing
        return export_model(Prepared(trained.module, pre), rundir.check_free(target),
                            raw_rows(pre, x), opset=opset, props=metadata(pre))


__all__ = ["CHECK_ROWS", "FORMATS", "OPSET", "OPSETS", "Prepared", "Verified", "check_rows",
           "dnnlab_logits", "export_model", "export_run", "metadata", "onnx_logits", "raw_rows",
           "to_onnx_bytes", "tolerance"]
