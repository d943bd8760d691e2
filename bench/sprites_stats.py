"""Sprites statistics for docs/data.md: the mean on-pixel fraction (the share of the 64×64
pixels that are on, averaged over images) on a seeded random sample, and the number of distinct
images on the whole grid (each image hashed by two random projections of its pixels).

    python -m bench.sprites_stats [--sample 20000] [--all]
"""

from __future__ import annotations

import argparse

import torch

from vae_lightning.data import sprites


def on_fraction(n: int, seed: int = 0) -> float:
    idx = torch.randperm(sprites.NUM_IMAGES, generator=torch.Generator().manual_seed(seed))[:n]
    return float(sprites.render(sprites.index_to_factors(idx)).mean())


def distinct_images(chunk: int = 16_384) -> int:
    g = torch.Generator().manual_seed(0)
    weights = torch.rand(2, 64 * 64, generator=g, dtype=torch.float64)  # two 52-bit projections: collisions ~never
    seen = set()
    for start in range(0, sprites.NUM_IMAGES, chunk):
        idx = torch.arange(start, min(start + chunk, sprites.NUM_IMAGES))
        x = sprites.render(sprites.index_to_factors(idx)).flatten(1).double()  # (n, 4096) in {0, 1}
        h = x @ weights.T  # (n, 2)
        seen.update(map(tuple, h.tolist()))
    return len(seen)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sample", type=int, default=20_000)
    p.add_argument("--all", action="store_true", help="also count the distinct images of all 737,280")
    args = p.parse_args()
    print(
        f"RADIUS {sprites.RADIUS}, MARGIN {sprites.MARGIN}: mean on-pixel fraction {on_fraction(args.sample):.4f} "
        f"over {args.sample} random images"
    )
    if args.all:
        print(f"distinct images: {distinct_images():,} of {sprites.NUM_IMAGES:,}")


if __name__ == "__main__":
    main()
