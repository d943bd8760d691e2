"""Sprites: a procedurally rendered data set on the dSprites factor grid (Matthey et al. 2017).

64×64 binary images of one white shape on black; five ground-truth factors:
shape (square, ellipse, heart) × scale (6 values in [0.5, 1]) × orientation (40 values,
dSprites' linspace(0, 2π, 40), so the first and last coincide as in dSprites) × x position (32)
× y position (32) = 737,280 images. Nothing is downloaded or stored: images are rendered on
demand, a batch at a time, from their index. Geometry is our own and not pixel-identical to
DeepMind's dSprites files; shapes are sized so that the mean on-pixel fraction is 0.043, as
reported for dSprites (docs/data.md, measured with ``bench/sprites_stats.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae_lightning.data.base import VAEDataModule, split
from vae_lightning.errors import UserError

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
NUM_IMAGES = math.prod(FACTOR_SIZES)  # 737,280
SIZE = 64
# half-extent of a shape at scale 1, in pixels: 11.4 gives dSprites' mean on-pixel fraction
# (0.043; 9.0 before gave 0.027, shapes 0.8× as large with a wide empty border)
RADIUS = 11.4
# the centre stays this far from the border, so a rotated shape (≤ 1.14·RADIUS from its
# centre, the square's corner) stays inside with a pixel to spare
MARGIN = 14.0
#: bump when the image rendered for an index changes (runs record it as their data version);
#: 2: dSprites' orientation grid and shape sizes
GENERATOR_VERSION = 2

_STRIDES = torch.tensor([math.prod(FACTOR_SIZES[i + 1 :]) for i in range(5)])
_SIZES = torch.tensor(FACTOR_SIZES)


def index_to_factors(idx: Tensor) -> Tensor:
    """Image indices (B,) -> factor indices (B, 5), in FACTOR_NAMES order (mixed radix)."""
    return (idx.long().unsqueeze(1) // _STRIDES) % _SIZES


def factors_to_index(factors: Tensor) -> Tensor:
    """Factor indices (B, 5) -> image indices (B,)."""
    return (factors.long() * _STRIDES).sum(1)


def factor_values(factors: Tensor) -> Tensor:
    """Factor indices (B, 5) -> values (B, 5): shape id, scale, angle in rad (dSprites' grid: steps
    of 2π/39; a step of 2π/40 made squares repeat every 10 steps and ellipses every 20), x and y
    in [0, 1]."""
    f = factors.float()
    return torch.stack([f[:, 0], 0.5 + 0.1 * f[:, 1], f[:, 2] * (2 * math.pi / 39), f[:, 3] / 31, f[:, 4] / 31], dim=1)


WINDOW = 2 * int(MARGIN)  # 28: a window this wide around the centre holds any shape (≤ 13 px from it)


def _square(u: Tensor, v: Tensor) -> Tensor:
    return torch.maximum(u.abs(), v.abs()) <= 0.8


def _ellipse(u: Tensor, v: Tensor) -> Tensor:
    return u.square() + (v / 0.5).square() <= 1.0


def _heart(u: Tensor, v: Tensor) -> Tensor:
    # heart curve (x² + y² − 1)³ − x²y³ ≤ 0, scaled to ≈ [-1, 1]², tip pointing down
    hx, hy = 1.15 * u, -1.15 * v + 0.1
    return (hx.square() + hy.square() - 1).pow(3) - hx.square() * hy.pow(3) <= 0


SHAPES = (_square, _ellipse, _heart)


def render(factors: Tensor) -> Tensor:
    """Factor indices (B, 5) -> binary images (B, 1, 64, 64), float32 in {0, 1}, on the
    factors' device. Each shape is drawn only in a 28×28 window around its centre and only with
    its own formula, instead of testing all three shapes on all 64×64 pixels (docs/benchmarks.md)."""
    shape, scale, angle, px, py = factor_values(factors).unbind(1)
    n, device = len(factors), factors.device
    r = (RADIUS * scale).view(-1, 1, 1)
    cx = MARGIN + px * (SIZE - 2 * MARGIN)
    cy = MARGIN + py * (SIZE - 2 * MARGIN)
    steps = torch.arange(WINDOW, device=device)
    cols = (cx.floor().long() - int(MARGIN)).view(-1, 1) + steps  # (B, W) image columns in the window
    rows = (cy.floor().long() - int(MARGIN)).view(-1, 1) + steps  # (B, W) image rows
    dx = (cols.float().view(-1, 1, WINDOW) + 0.5 - cx.view(-1, 1, 1)) / r  # (B, 1, W): pixel centres
    dy = (rows.float().view(-1, WINDOW, 1) + 0.5 - cy.view(-1, 1, 1)) / r  # (B, W, 1): rows, pointing down
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    u = cos * dx + sin * dy  # (B, W, W) shape-frame coordinates in units of r
    v = -sin * dx + cos * dy
    window = torch.empty(n, WINDOW, WINDOW, dtype=torch.bool, device=device)
    for s, inside in enumerate(SHAPES):
        sel = (shape == s).nonzero().squeeze(1)
        if len(sel):
            window[sel] = inside(u[sel], v[sel])
    img = torch.zeros(n, SIZE, SIZE, device=device)
    img[torch.arange(n, device=device).view(-1, 1, 1), rows.view(-1, WINDOW, 1), cols.view(-1, 1, WINDOW)] = (
        window.float()
    )
    return img.unsqueeze(1)


class SpritesSource:
    """All 737,280 sprites, rendered by index on ``device``; targets are the factor indices (B, 5)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.strides, self.sizes = _STRIDES.to(self.device), _SIZES.to(self.device)

    def __len__(self) -> int:
        return NUM_IMAGES

    def to(self, device: torch.device | str) -> SpritesSource:
        """This source rendering on ``device`` (a GPU renders a batch in well under a millisecond)."""
        return self if torch.device(device) == self.device else SpritesSource(device)

    def __getitem__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        factors = (idx.to(self.device).long().unsqueeze(1) // self.strides) % self.sizes  # index_to_factors
        return render(factors), factors


class SpritesDataModule(VAEDataModule):
    """Sprites on the dSprites factor grid, the default data set (no download).

    The default data set: sprites on the dSprites factor grid, rendered on the fly (no
    download, a few MB of memory). Batches are (x (B, 1, 64, 64) in {0, 1}, factors (B, 5) long).

    Args:
        batch_size: examples per batch on each device.
        seed: seed of the shuffling.
        val_size: examples held out for validation (a fraction if < 1).
        num_images: use a seeded random subset of this many images (None: all 737,280).
        on_device: render on the training device (None: on a CUDA GPU).
        split_seed: seed of the subset and of the train/val split (the held-out split is also
            the test set): the same for every ``seed``.
    """

    image_shape = (1, SIZE, SIZE)
    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    render = staticmethod(render)  # factor indices (B, 5) -> images, for the disentanglement metrics

    def __init__(
        self,
        batch_size: int = 64,
        seed: int = 0,
        val_size: int | float = 10_000,
        num_images: int | None = None,
        on_device: bool | None = None,
        split_seed: int = 0,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            seed=seed,
            binarize="none",
            val_size=val_size,
            on_device=on_device,
            split_seed=split_seed,
        )
        if num_images is not None and not 1 < num_images <= NUM_IMAGES:
            raise UserError(f"data.init_args.num_images must be in [2, {NUM_IMAGES}], got {num_images}.")
        self.num_images = num_images

    @property
    def binary(self) -> bool:
        return True

    def setup(self, stage: str | None = None) -> None:
        source = SpritesSource()
        ids = torch.arange(NUM_IMAGES)
        if self.num_images is not None:
            g = torch.Generator().manual_seed(self.split_seed + 1)
            ids = torch.randperm(NUM_IMAGES, generator=g)[: self.num_images].sort().values
        train, val = split(len(ids), self.val_size, self.split_seed)
        self.train_source = self.val_source = self.test_source = source
        # no separate test set exists for a synthetic grid: test uses the held-out split
        self.train_idx, self.val_idx, self.test_idx = ids[train], ids[val], ids[val]
