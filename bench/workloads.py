"""The one workload every runner trains: the conv VAE of ``configs/mnist/vae.yaml`` (2 conv
layers, 16 latents, Bernoulli likelihood, Adam 1e-3) at batch 128 on 9,000 MNIST images with
one fixed, seeded binarization, held in memory.

The images are the real MNIST test split from ``../shared/data/mnist`` (the first 9,000),
laid out as torchvision's raw files so ``vae fit`` reads them through ``MNISTDataModule``; when
those files are absent, 9,000 seeded random images stand in (speed does not depend on content).
"""

from __future__ import annotations

import argparse
import gzip
import os
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
N_TRAIN, BATCH, LATENT, LR, SEED = 9000, 128, 16, 1e-3, 0
CHANNELS, HIDDEN = (32, 64), 256
IMAGE_SHAPE = (1, 28, 28)
# the tiny-step workload (bench/tiny.py): an MLP VAE whose step is about a millisecond, so the
# trainer's own per-step cost shows (on a GPU every small VAE lives in this regime)
TINY_BATCH, TINY_LATENT, TINY_HIDDEN = 32, 4, 64


def runner_args() -> argparse.Namespace:
    """The arguments every timed runner takes; also sets its thread count and seed."""
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--fused", action="store_true", help="Adam(fused=True), as the shipped configs use")
    p.add_argument("--tiny", action="store_true", help="the tiny-step workload (bench/tiny.py)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(SEED)
    return a


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    shape = np.frombuffer(data[4 : 4 + 4 * ndim], ">i4")
    return np.frombuffer(data[4 + 4 * ndim :], np.uint8).reshape(shape)


def mnist_images() -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 images (10000, 28, 28), labels (10000,) and a note on where they came from."""
    mnist_dir = Path(os.environ.get("VAE_BENCH_MNIST", SHARED_MNIST))
    images, labels = mnist_dir / "t10k-images-idx3-ubyte.gz", mnist_dir / "t10k-labels-idx1-ubyte.gz"
    if images.exists() and labels.exists():
        return _read_idx(images), _read_idx(labels), f"real MNIST test split ({mnist_dir})"
    rng = np.random.default_rng(SEED)
    x = (rng.random((10000, 28, 28)) < 0.13).astype(np.uint8) * 255  # MNIST's share of ink
    return x, rng.integers(0, 10, 10000).astype(np.uint8), f"SYNTHETIC stand-in ({mnist_dir} not found)"


def write_mnist_raw(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """torchvision's ``<root>/MNIST/raw`` layout: the first N_TRAIN as train, the rest as test."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, sl in (("train", slice(0, N_TRAIN)), ("t10k", slice(N_TRAIN, None))):
        x, y = images[sl], labels[sl]
        (raw / f"{split}-images-idx3-ubyte").write_bytes(
            b"\x00\x00\x08\x03" + np.array(x.shape, ">i4").tobytes() + x.tobytes()
        )
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(
            b"\x00\x00\x08\x01" + np.array([len(y)], ">i4").tobytes() + y.tobytes()
        )
    return root


def train_images(images: np.ndarray) -> torch.Tensor:
    """The training tensor every runner uses: float (N_TRAIN, 1, 28, 28) in {0, 1}, the same
    fixed draw ``MNISTDataModule(binarize="fixed", seed=0)`` makes."""
    from vae_lightning.data.base import fixed_binarization

    x = torch.from_numpy(images[:N_TRAIN].copy()).unsqueeze(1)
    return fixed_binarization(x, SEED).float().div_(255)


def nets() -> tuple[torch.nn.Module, torch.nn.Module]:
    from vae_lightning.nets import ConvDecoder, ConvEncoder

    return (
        ConvEncoder(IMAGE_SHAPE, LATENT, channels=CHANNELS, hidden=HIDDEN),
        ConvDecoder(IMAGE_SHAPE, LATENT, channels=CHANNELS, hidden=HIDDEN),
    )


def tiny_nets() -> tuple[torch.nn.Module, torch.nn.Module]:
    """The tiny-step workload's nets: one hidden layer of TINY_HIDDEN units each way, TINY_LATENT latents."""
    from vae_lightning.nets import MLPDecoder, MLPEncoder

    return (
        MLPEncoder(IMAGE_SHAPE, TINY_LATENT, hidden=(TINY_HIDDEN,)),
        MLPDecoder(IMAGE_SHAPE, TINY_LATENT, hidden=(TINY_HIDDEN,)),
    )


def objective(encoder, decoder, likelihood, x: torch.Tensor) -> torch.Tensor:
    """loss = recon + kl, per example, averaged over the batch (what ``VAE._step`` optimizes)."""
    from vae_lightning.objectives import gaussian_kl, posterior

    mu, logvar = encoder(x)
    z = posterior(mu, logvar).rsample()
    recon = -likelihood.log_prob(decoder(z.to(mu.dtype)), x)
    return recon.mean() + gaussian_kl(mu, logvar).sum(1).mean()
