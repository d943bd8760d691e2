"""Shared fixtures: local data laid out as torchvision expects it, and the `vae` entry point."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
IN_CI = os.environ.get("CI", "").lower() == "true"


# a model small enough for steps of a few milliseconds (command-line arguments of `vae`)
TINY_MODEL = [
    "--model",
    "vae_lightning.VAE",
    "--model.init_args.latent_dim",
    "4",
    "--model.init_args.encoder",
    "vae_lightning.MLPEncoder",
    "--model.init_args.encoder.init_args.hidden",
    "[32]",
    "--model.init_args.decoder",
    "vae_lightning.MLPDecoder",
    "--model.init_args.decoder.init_args.hidden",
    "[32]",
]


def _vae_command() -> list[str]:
    script = Path(sys.executable).parent / "vae"
    return [str(script)] if script.exists() else [sys.executable, "-m", "vae_lightning"]


def run_vae(
    *args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the real `vae` console script in a subprocess with W&B offline."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [*_vae_command(), *args], cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def _write_idx(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture(scope="session")
def mnist_test_split() -> tuple:
    """The real MNIST test split from ../shared/data/mnist as uint8 tensors (10000, 28, 28), (10000,)."""
    images, labels = SHARED_MNIST / "t10k-images-idx3-ubyte.gz", SHARED_MNIST / "t10k-labels-idx1-ubyte.gz"
    if not images.exists() or not labels.exists():
        if IN_CI:
            pytest.fail(f"CI=true but the shared MNIST files are missing under {SHARED_MNIST}")
        pytest.skip(f"needs the real MNIST test split under {SHARED_MNIST} (present on the project's machines)")
    from torchvision.datasets.mnist import read_image_file, read_label_file

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"vae-mnist-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    for src in (images, labels):
        with gzip.open(src) as f, open(tmp / src.stem, "wb") as out:
            shutil.copyfileobj(f, out)
    x, y = read_image_file(str(tmp / images.stem)), read_label_file(str(tmp / labels.stem))
    shutil.rmtree(tmp)
    return x, y


def write_mnist_raw(root: Path, name: str, images, labels, n_train: int = 9000) -> Path:
    """Lay out uint8 images (N, 28, 28) and labels as torchvision's `<root>/<name>/raw` IDX files:
    the first n_train as the train split, the rest as the test split."""
    import numpy as np

    def idx_images(x) -> bytes:
        return b"\x00\x00\x08\x03" + np.array(x.shape, ">i4").tobytes() + x.numpy().tobytes()

    def idx_labels(y) -> bytes:
        return b"\x00\x00\x08\x01" + np.array([len(y)], ">i4").tobytes() + y.numpy().astype("u1").tobytes()

    raw = root / name / "raw"
    _write_idx(raw / "train-images-idx3-ubyte", idx_images(images[:n_train]))
    _write_idx(raw / "train-labels-idx1-ubyte", idx_labels(labels[:n_train]))
    _write_idx(raw / "t10k-images-idx3-ubyte", idx_images(images[n_train:]))
    _write_idx(raw / "t10k-labels-idx1-ubyte", idx_labels(labels[n_train:]))
    return root


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory, mnist_test_split) -> Path:
    """A torchvision MNIST folder: 9,000 train and 1,000 test images from the real test split."""
    x, y = mnist_test_split
    return write_mnist_raw(tmp_path_factory.mktemp("mnist"), "MNIST", x, y)


# `make test` spreads the tests over two pytest-xdist workers (--dist loadgroup), one file per worker so that
# a module's fixtures are built once. Tests that start several training processes or share the one local
# SLURM node form one group, run one after another, so that two of them never compete for the same cores or
# the same node.
ONE_AT_A_TIME = {"test_ddp.py", "test_srun_ddp.py", "test_slurm.py", "test_study_slurm.py"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups from the marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        several = item.path.name in ONE_AT_A_TIME or "ddp" in item.name
        item.add_marker(pytest.mark.xdist_group("processes" if several else item.path.name))
