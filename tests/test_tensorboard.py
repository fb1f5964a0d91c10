"""TensorBoard event files, read back with TensorBoard's own reader."""

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from dnnlab.doctor.probe import probe_run  # noqa: E402


def test_scalars_per_epoch_and_layer_histograms(tiny, tiny_cfg, tmp_path):
    result = probe_run(tiny_cfg, tmp_path / "run", data=tiny, tensorboard=True)
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"),
                           size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        events = acc.Scalars(f"epoch/{key}")
        assert [e.step for e in events] == [1, 2, 3]
        assert [e.value for e in events] == pytest.approx(result.history[key], rel=1e-5)
    # 2 hidden layers + head; weights, gradients and activations; at init and after each epoch
    assert len([t for t in tags["histograms"] if t.startswith("weight/")]) == 3
    for kind in ("weight", "grad", "activation"):
        events = acc.Histograms(f"{kind}/layer01")
        assert [e.step for e in events] == [0, 1, 2, 3]
        assert events[0].histogram_value.num == (16 * 12 if kind != "activation" else 256 * 16)
