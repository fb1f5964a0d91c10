"""dnnlab doctor: record what each layer does while a net trains, then say what is wrong and the
chapter's remedy.

* :mod:`dnnlab.doctor.record`: the ``LayerRecorder`` and ``TensorBoardLogger`` callbacks and
  ``callbacks_for(cfg, data, run_dir, record_every=1, tensorboard=False, histogram_every=1)``.
* :mod:`dnnlab.doctor.diagnose`: the findings, pure functions of the records and curves, and
  ``EXPLAINS``, the declared relation that ranks a cause (a bad init, a learning rate that jumps
  the weights) above the symptoms it explains (dead units, vanishing gradients).
* :mod:`dnnlab.doctor.report`: ``examine(run_dir)``, the printed findings and ``doctor.html``.
* :mod:`dnnlab.doctor.probe`: ``probe_run(cfg, run_dir)``, a training run recorded from init.
* ``python -m dnnlab.doctor.cost``: what recording costs per epoch, which keeps recording on by
  default only while it stays under ``BUDGET`` (figures: benchmarks/README.md).

Calibration behind the thresholds (MNIST, 2,000 training images, Nadam, batch 32, 5 epochs):
healthy 5x100 He/ELU and ReLU nets have a gradient ratio (hidden layer 1 / last) of 0.5-5,
under 15% dead units per layer, no saturated outputs and update ratios of 3e-4 to 3e-3 per step;
20 sigmoid layers with Glorot init have a gradient ratio of 1e-12 (vanishing); 20 ReLU layers with
N(0, 1) init 1e15 (exploding); sigmoid layers with N(0, 1) init 40-60% saturated outputs (their
gradient ratio stays near 1: N(0, 1) sigmoid nets saturate rather than vanish); biases of -5 kill
every ReLU; Nadam at lr 1 moves the weights by 0.4-0.8 of their norm per step, at lr 1e-6 by 4e-6.
"""
