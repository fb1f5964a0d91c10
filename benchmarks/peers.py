"""The peers dnnlab is timed against, each written the way its users write it.

The workload is the chapter's CIFAR-10 exercise: an MLP of 20 hidden layers x 100 ELU units with
He normal init, Nadam, softmax over 10 classes, batch 32; one epoch = one pass over the training
images plus one validation pass. Every peer function takes the same arrays and returns an
:class:`EpochClock`: the wall seconds and the process CPU seconds of each epoch (train +
validation), warm-up epochs included; the caller drops those.

None of the peers is a dnnlab dependency. A peer whose library is missing raises
``PeerUnavailable`` with the pip command that installs it (see benchmarks/README.md).
"""

from __future__ import annotations

import time

import numpy as np

DEPTH, WIDTH, CLASSES, BATCH, LR = 20, 100, 10, 32, 1e-3


class EpochClock:
    """Wall and CPU time of each epoch. CPU time (all threads of this process) is the steadier
    figure on a machine shared with other work, where waiting for a core inflates wall time."""

    def __init__(self):
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.seconds.append(time.perf_counter() - self._wall)
        self.cpu_seconds.append(time.process_time() - self._cpu)

    def as_dict(self) -> dict:
        return {"seconds": self.seconds, "cpu_seconds": self.cpu_seconds}


class PeerUnavailable(RuntimeError):
    """The peer's library is not installed (the message says how to install it)."""


def make_data(n_train: int, n_valid: int, features: int = 3072, seed: int = 0):
    """Random float32 images of CIFAR-10's flattened shape and int64 labels (speed ignores values)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n_train + n_valid, features), dtype=np.float32)
    y = rng.integers(0, CLASSES, n_train + n_valid).astype(np.int64)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


# ----------------------------------------------------------------------------------------- torch

def _torch_mlp(features: int):
    """nn.Sequential of Linear+ELU blocks, He normal (Kaiming) init, logits out."""
    from torch import nn
    layers, fan_in = [], features
    for _ in range(DEPTH):
        lin = nn.Linear(fan_in, WIDTH)
        nn.init.kaiming_normal_(lin.weight)
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.ELU()]
        fan_in = WIDTH
    layers.append(nn.Linear(fan_in, CLASSES))
    return nn.Sequential(*layers)


def _sync(device) -> None:
    import torch
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def torch_dataloader(x_tr, y_tr, x_va, y_va, epochs: int, device: str = "cpu") -> EpochClock:
    """Plain PyTorch: TensorDataset + DataLoader(shuffle=True, batch 32, num_workers=0),
    ``loss.item()`` every step for the running loss, validation through a DataLoader too."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    train_loader = DataLoader(TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
                              batch_size=BATCH, shuffle=True, num_workers=0)
    valid_loader = DataLoader(TensorDataset(torch.from_numpy(x_va), torch.from_numpy(y_va)),
                              batch_size=BATCH, shuffle=False, num_workers=0)
    model = _torch_mlp(x_tr.shape[1]).to(device)
    optimizer = torch.optim.NAdam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()

    clock = EpochClock()
    for _ in range(epochs):
        clock.start()
        model.train()
        running = 0.0
        for xb, yb in train_loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            running += loss.item()
        model.eval()
        val_loss, correct = 0.0, 0
        with torch.no_grad():
            for xb, yb in valid_loader:
                xb, yb = xb.to(device), yb.to(device)
                out = model(xb)
                val_loss += loss_fn(out, yb).item() * len(yb)
                correct += (out.argmax(1) == yb).sum().item()
        _sync(device)
        clock.stop()
    return clock


def torch_on_device(x_tr, y_tr, x_va, y_va, epochs: int, device: str = "cpu") -> EpochClock:
    """The same loop with the data moved to the device once and batches drawn by indexing a
    permutation: no DataLoader, no collation. Still ``.item()`` every step, validation in 32s."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    xt, yt = torch.from_numpy(x_tr).to(device), torch.from_numpy(y_tr).to(device)
    xv, yv = torch.from_numpy(x_va).to(device), torch.from_numpy(y_va).to(device)
    model = _torch_mlp(x_tr.shape[1]).to(device)
    optimizer = torch.optim.NAdam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    n = len(xt)

    clock = EpochClock()
    for _ in range(epochs):
        clock.start()
        model.train()
        running = 0.0
        perm = torch.randperm(n, device=device)
        for start in range(0, n, BATCH):
            idx = perm[start:start + BATCH]
            xb, yb = xt[idx], yt[idx]
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            running += loss.item()
        model.eval()
        val_loss, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(xv), BATCH):
                xb, yb = xv[start:start + BATCH], yv[start:start + BATCH]
                out = model(xb)
                val_loss += loss_fn(out, yb).item() * len(yb)
                correct += (out.argmax(1) == yb).sum().item()
        _sync(device)
        clock.stop()
    return clock


# ------------------------------------------------------------------------------------- lightning

def lightning(x_tr, y_tr, x_va, y_va, epochs: int, device: str = "cpu") -> EpochClock:
    """A LightningModule fitted by ``Trainer`` with validation each epoch, logging the train and
    validation loss with ``self.log`` (as its docs show); progress bar, logger and checkpoints off.
    An epoch is timed from the start of its training pass to the end of its validation pass."""
    try:
        import lightning as L
    except ImportError:
        raise PeerUnavailable("lightning is not installed; pip install lightning") from None
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    class Classifier(L.LightningModule):
        def __init__(self, features: int):
            super().__init__()
            self.net = _torch_mlp(features)
            self.loss_fn = nn.CrossEntropyLoss()

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            loss = self.loss_fn(self.net(xb), yb)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            xb, yb = batch
            out = self.net(xb)
            self.log("val_loss", self.loss_fn(out, yb))
            self.log("val_acc", (out.argmax(1) == yb).float().mean())

        def configure_optimizers(self):
            return torch.optim.NAdam(self.parameters(), lr=LR)

    class EpochTimer(L.Callback):
        def __init__(self):
            self.starts, self.ends = [], {}

        def on_train_epoch_start(self, trainer, pl_module):
            _sync(device)
            self.starts.append((time.perf_counter(), time.process_time()))

        def _end(self, trainer):
            _sync(device)   # the later of the two hooks wins
            self.ends[trainer.current_epoch] = (time.perf_counter(), time.process_time())

        def on_train_epoch_end(self, trainer, pl_module):
            self._end(trainer)

        def on_validation_epoch_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self._end(trainer)

    torch.manual_seed(0)
    train_loader = DataLoader(TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
                              batch_size=BATCH, shuffle=True, num_workers=0)
    valid_loader = DataLoader(TensorDataset(torch.from_numpy(x_va), torch.from_numpy(y_va)),
                              batch_size=BATCH, shuffle=False, num_workers=0)
    timer = EpochTimer()
    trainer = L.Trainer(max_epochs=epochs, accelerator="gpu" if device.startswith("cuda") else "cpu",
                        devices=1, enable_progress_bar=False, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(Classifier(x_tr.shape[1]), train_loader, valid_loader)
    clock = EpochClock()
    for e, (wall, cpu) in enumerate(timer.starts):
        clock.seconds.append(timer.ends[e][0] - wall)
        clock.cpu_seconds.append(timer.ends[e][1] - cpu)
    return clock


# ----------------------------------------------------------------------------------------- keras

def keras(x_tr, y_tr, x_va, y_va, epochs: int, device: str = "cpu") -> EpochClock:
    """Keras 3 ``model.fit(validation_data=..., batch_size=32, verbose=0)`` with its defaults
    (including ``jit_compile="auto"``) on the backend named by $KERAS_BACKEND (TensorFlow if
    unset). A callback times each epoch; Keras runs validation before ``on_epoch_end``."""
    import importlib.util
    if importlib.util.find_spec("keras") is None:
        raise PeerUnavailable("keras is not installed; pip install keras tensorflow")
    try:
        import keras as K
    except Exception as e:  # its backend is missing, e.g. KERAS_BACKEND=jax without jax
        raise PeerUnavailable(f"keras could not load its backend ({e}); install it, e.g. "
                              "pip install jax") from None

    if device.startswith("cuda") and not _keras_sees_gpu(K.backend.backend()):
        raise PeerUnavailable(f"Keras on {K.backend.backend()} sees no GPU, so it would run on the "
                              "CPU; install its CUDA build (e.g. pip install 'tensorflow[and-cuda]' "
                              "or 'jax[cuda12]')")

    class EpochTimer(K.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.clock = EpochClock()

        def on_epoch_begin(self, epoch, logs=None):
            self.clock.start()

        def on_epoch_end(self, epoch, logs=None):
            self.clock.stop()

    K.utils.set_random_seed(0)
    model = K.Sequential([K.Input((x_tr.shape[1],))]
                         + [K.layers.Dense(WIDTH, activation="elu", kernel_initializer="he_normal")
                            for _ in range(DEPTH)]
                         + [K.layers.Dense(CLASSES, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=K.optimizers.Nadam(LR),
                  metrics=["accuracy"])
    timer = EpochTimer()
    model.fit(x_tr, y_tr, validation_data=(x_va, y_va), epochs=epochs, batch_size=BATCH,
              verbose=0, callbacks=[timer])
    return timer.clock


def _keras_sees_gpu(backend: str) -> bool:
    """Whether Keras's backend will place work on a GPU (a CPU-only build silently would not)."""
    if backend == "tensorflow":
        import tensorflow as tf
        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax
        return jax.default_backend() == "gpu"
    if backend == "torch":
        import torch
        return torch.cuda.is_available()
    return False


PEERS = {
    "torch-dataloader": torch_dataloader,
    "torch-on-device": torch_on_device,
    "lightning": lightning,
    "keras": keras,
}
