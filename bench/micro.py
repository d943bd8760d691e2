"""Before/after timings of the data-path and per-step changes, one operation at a time (best
of several repeats, in this process). "before" re-creates the code as it was.

    python -m bench.micro --threads 2 --out micro.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def best_us(fn, n: int = 200, repeats: int = 5) -> float:
    """Best mean time of ``n`` calls over ``repeats``, in µs."""
    for _ in range(min(n, 20)):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def full_frame_render(factors):
    """The sprites renderer before: all three shapes' formulas on all 64×64 pixels."""
    from vae_lightning.data.sprites import MARGIN, RADIUS, SIZE, factor_values

    shape, scale, angle, px, py = factor_values(factors).unbind(1)
    grid = (torch.arange(SIZE, dtype=torch.float32) + 0.5).view(1, 1, SIZE)
    r = (RADIUS * scale).view(-1, 1, 1)
    dx = (grid - (MARGIN + px * (SIZE - 2 * MARGIN)).view(-1, 1, 1)) / r
    dy = (grid.transpose(1, 2) - (MARGIN + py * (SIZE - 2 * MARGIN)).view(-1, 1, 1)) / r
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    hx, hy = 1.15 * u, -1.15 * v + 0.1
    square = torch.maximum(u.abs(), v.abs()) <= 0.8
    ellipse = u.square() + (v / 0.5).square() <= 1.0
    heart = (hx.square() + hy.square() - 1).pow(3) - hx.square() * hy.pow(3) <= 0
    s = shape.view(-1, 1, 1)
    return torch.where(s == 0, square, torch.where(s == 1, ellipse, heart)).unsqueeze(1).float()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from vae_lightning.data.loader import TensorSource, _seeded
    from vae_lightning.data.sprites import NUM_IMAGES, index_to_factors, render

    g = torch.Generator().manual_seed(0)
    rows = []
    factors = index_to_factors(torch.randint(0, NUM_IMAGES, (64,), generator=g))
    before, after = best_us(lambda: full_frame_render(factors), 50), best_us(lambda: render(factors), 50)
    rows.append(("sprites render, batch of 64 (img/s)", 64e6 / before, 64e6 / after))
    x = torch.rand(128, 1, 28, 28, generator=g)
    before = best_us(lambda: torch.bernoulli(x, generator=_seeded(1, 2, 3)))
    after = best_us(lambda: torch.rand(x.shape, generator=_seeded(1, 2, 3)).lt_(x))
    rows.append(("dynamic binarization, 128×784 (µs)", before, after))
    images = (torch.rand(9000, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    source, idx = TensorSource(images, torch.zeros(9000, dtype=torch.long)), torch.randperm(9000, generator=g)[:128]
    before = best_us(lambda: (images[idx].float().div_(255), source.targets[idx]))
    rows.append(("MNIST batch from uint8 memory, 128 (µs)", before, best_us(lambda: source[idx])))
    old = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"  # what importing Lightning sets
    before = best_us(torch.cuda.is_available, 200)
    del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]
    after = best_us(torch.cuda.is_available, 200)
    if old is not None:
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = old
    rows.append(("GPU check in every Adam step, no GPU (µs)", before, after))
    with open(a.out, "w") as f:
        json.dump({"threads": torch.get_num_threads(), "rows": rows}, f)


if __name__ == "__main__":
    main()
