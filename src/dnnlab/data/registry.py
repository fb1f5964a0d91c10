"""What dnnlab knows about each real dataset: file names, official checksums, sources, classes.

Everything the loaders trust lives in ``SPECS``, one frozen ``Spec`` per dataset, so a test can
swap in a spec with its own checksums (``monkeypatch.setitem(SPECS, "mnist", replace(...))``)
and exercise the real download-verify-cache path against tiny files served locally.

Where things are looked for (``search_dirs``): an explicit ``data_dir``, then
``$DNNLAB_DATA_DIR``, then the user cache (``$DNNLAB_CACHE_DIR``, else
``$XDG_CACHE_HOME/dnnlab``, else ``~/.cache/dnnlab``). Downloads come from the official sources
unless ``$DNNLAB_MIRROR`` names a URL prefix serving ``<prefix>/<dataset>/<file name>``
(one folder per dataset because MNIST and Fashion-MNIST use the same file names).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dnnlab.config import DATASETS, FILE_DATASET
from dnnlab.errors import DataError

DIGITS = [str(i) for i in range(10)]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-bin"
CIFAR_FILES = ("data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
               "data_batch_5.bin", "test_batch.bin")


@dataclass(frozen=True, eq=False)
class Spec:
    """One real dataset (hashed by identity, so a test's replacement spec is a new cache key).

    ``checksums`` maps each raw file name to its official digest: sha256 of the *uncompressed*
    IDX file for MNIST-like sets (gzip output is not byte-stable across tools), md5 of each
    ``.bin`` of the CIFAR-10 binary release (what the CIFAR page publishes).
    """
    name: str                       # "fashion-mnist"
    format: str                     # "idx" | "cifar"
    npz: str                        # Keras-style file name, e.g. "fashion_mnist.npz"
    npz_sha256: str                 # the known good Keras-layout copy (the README table)
    checksums: dict[str, str]       # raw file name -> official digest
    digest: str                     # "sha256" | "md5"
    url: str                        # official base URL (files are url + file name)
    class_names: tuple[str, ...]
    folders: tuple[str, ...]        # subfolder names a user might keep the raw files in


SPECS: dict[str, Spec] = {
    "mnist": Spec(
        name="mnist", format="idx", npz="mnist.npz",
        npz_sha256="06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",
        checksums={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        digest="sha256", url="https://storage.googleapis.com/cvdf-datasets/mnist/",
        class_names=tuple(DIGITS), folders=("mnist", "MNIST")),
    "fashion-mnist": Spec(
        name="fashion-mnist", format="idx", npz="fashion_mnist.npz",
        npz_sha256="5b6d2c4c694a91887af8ab7d039c04f80af3c29378d731c93a538d2e831aa469",
        checksums={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        digest="sha256", url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        class_names=tuple(FASHION), folders=("fashion-mnist", "fashion_mnist", "FashionMNIST")),
    "cifar10": Spec(
        name="cifar10", format="cifar", npz="cifar10.npz",
        npz_sha256="a44cc18e4ad961b5158c7da062a6232fb65938b615bf013046199b823b75c43d",
        checksums={
            "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
            "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
            "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
            "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
            "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
            "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
        },
        digest="md5", url="https://www.cs.toronto.edu/~kriz/",
        class_names=tuple(CIFAR10), folders=("cifar10", "cifar-10", "CIFAR10")),
}

GENERATED = "synthetic"
NAMES = DATASETS  # the config's one list; every name but these two has a Spec here
if set(SPECS) | {GENERATED, FILE_DATASET} != set(NAMES):   # FILE_DATASET: dnnlab.data.files
    raise ImportError(f"dnnlab.data.registry: the specs {sorted(SPECS)} do not match "
                      f"config.DATASETS {NAMES}")


def cache_root() -> Path:
    """The user cache for downloads: $DNNLAB_CACHE_DIR, $XDG_CACHE_HOME/dnnlab or ~/.cache/dnnlab."""
    if os.environ.get("DNNLAB_CACHE_DIR"):
        return Path(os.environ["DNNLAB_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "dnnlab"
    return Path.home() / ".cache" / "dnnlab"


def embedded_path(name: str) -> Path | None:
    """The copy shipped inside the package (MNIST only: 11 MB, so tests and demos run offline)."""
    if name != "mnist":
        return None
    return Path(__file__).with_name("embedded") / "mnist.npz"


def search_dirs(data_dir: str | Path | None) -> list[tuple[str, Path | None]]:
    """(label, folder) in lookup order; folder is None where the place is not configured."""
    env = os.environ.get("DNNLAB_DATA_DIR")
    return [("data_dir", Path(data_dir).expanduser() if data_dir else None),
            ("$DNNLAB_DATA_DIR", Path(env).expanduser() if env else None),
            ("cache", cache_root())]


def download_files(spec: Spec) -> list[str]:
    """The file names fetched for ``spec`` (relative to its base URL)."""
    if spec.format == "idx":
        return [f"{name}.gz" for name in IDX_FILES]
    return [CIFAR_ARCHIVE]


def file_url(spec: Spec, file_name: str) -> str:
    """Where ``file_name`` of ``spec`` is downloaded from ($DNNLAB_MIRROR/<dataset>/ if set)."""
    mirror = os.environ.get("DNNLAB_MIRROR")
    if mirror:
        return f"{mirror.rstrip('/')}/{spec.name}/{file_name}"
    return spec.url + file_name


def get_spec(name: str) -> Spec:
    if name not in SPECS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(NAMES)}")
    return SPECS[name]
