"""Data path alone: batches/s of our loaders against a per-item ``DataLoader``, no model.

- MNIST (batch 128): ``MNISTDataModule``'s training loader (dynamic binarization, the
  default) against torchvision's ``MNIST`` data set with ``ToTensor`` in a ``DataLoader``
  (per item, then collate; ``num_workers=0``).
- Sprites (batch 64, all 737,280 images): ``SpritesDataModule``'s training loader.

    python -m bench.data_path --mnist-root DIR --threads 2 --out data.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def rate(loader, seconds: float = 3.0, min_batches: int = 20) -> float:
    """Batches/s of ``loader``, iterated (over epochs if needed) for at least ``seconds``."""
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in loader:
            n += 1
            if n >= min_batches and time.perf_counter() - t0 >= seconds:
                return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mnist-root", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from torch.utils.data import DataLoader
    from torchvision.datasets import MNIST
    from torchvision.transforms import ToTensor

    from vae_lightning.data import MNISTDataModule, SpritesDataModule

    result = {"threads": torch.get_num_threads()}
    dm = MNISTDataModule(data_dir=a.mnist_root, batch_size=128, val_size=0)
    dm.setup("fit")
    per_item = DataLoader(
        MNIST(a.mnist_root, train=True, transform=ToTensor()),
        batch_size=128,
        shuffle=True,
        drop_last=True,
        num_workers=0,
    )
    for _ in range(2):  # interleaved, twice; the best of each
        for name, loader in (("mnist_ours", dm.train_dataloader()), ("mnist_per_item", per_item)):
            result[name] = max(result.get(name, 0.0), rate(loader, a.seconds))
    sprites = SpritesDataModule(batch_size=64)
    sprites.setup("fit")
    result["sprites_ours"] = rate(sprites.train_dataloader(), a.seconds)
    with open(a.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
