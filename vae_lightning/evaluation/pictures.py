"""Picture grids of a trained ``VAE``: reconstructions, prior samples, latent traversals and
interpolations. Each function returns one image grid (3, H', W') in [0, 1] (torchvision's
``make_grid``); ``save_png`` writes it atomically. Used by ``ImageLogger`` and by
``vae sample|traverse|interpolate``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from vae_lightning.errors import UserError
from vae_lightning.runtime.atomic import atomic_open

PAD = 0.5  # gray lines between the images of a grid


def _grid(images: Tensor, nrow: int) -> Tensor:
    from torchvision.utils import make_grid

    return make_grid(images.float().cpu(), nrow=nrow, pad_value=PAD)


@torch.no_grad()
def encode_mean(model, x: Tensor) -> Tensor:
    """Posterior means μ(x), (B, D), through the model's ``encode`` (a hierarchical model's mean path)."""
    return model.encode(x)[0]


def activity_order(mu: Tensor) -> Tensor:
    """Latent dimensions sorted by Var_x(μ_u) over the inputs, most active first: (D,) long."""
    var = mu.var(0) if len(mu) > 1 else torch.zeros(mu.shape[1])
    return torch.argsort(var, descending=True, stable=True)


@torch.no_grad()
def reconstruction_grid(model, x: Tensor, nrow: int = 8) -> Tensor:
    """Inputs in odd rows and their reconstructions E[x|z=μ(x)] in the row below."""
    recon = model.reconstruct(x).to(x.device, x.dtype)
    pairs = [t for i in range(0, len(x), nrow) for t in (x[i : i + nrow], recon[i : i + nrow])]
    return _grid(torch.cat(pairs), nrow)


@torch.no_grad()
def sample_grid(
    model, n: int, nrow: int = 8, seed: int = 0, temperature: float = 1.0, draw: bool = False, on_row=None
) -> Tensor:
    """E[x|z] (or with ``draw`` draws from p(x|z)) for n seeded draws z ~ p(z), the model's prior
    (the standard normal: N(0, T²I)); ``on_row``: see ``VAE.decode`` (autoregressive decoders)."""
    g = torch.Generator().manual_seed(seed)
    return _grid(model.sample(n, generator=g, temperature=temperature, draw=draw, on_row=on_row), nrow)


@torch.no_grad()
def traversal_grid(model, z: Tensor, dims: Tensor | list[int], steps: int = 7, span: float = 3.0) -> Tensor:
    """One row per dimension u in ``dims``: z (D,) with z_u set to ``steps`` values from −span
    to +span (prior standard deviations), all other dimensions held fixed."""
    values = torch.linspace(-span, span, steps)
    rows = []
    for u in dims:
        zs = z.float().cpu().repeat(steps, 1)
        zs[:, int(u)] = values
        rows.append(zs)
    return _grid(model.decode(torch.cat(rows)), steps)


@torch.no_grad()
def interpolation_grid(
    model, z_a: Tensor, z_b: Tensor, steps: int = 8, x_a: Tensor | None = None, x_b: Tensor | None = None
) -> Tensor:
    """One row per pair (z_a[i], z_b[i]) of latents (P, D): decodings of (1 − t)·z_a + t·z_b for
    ``steps`` values of t in [0, 1]; with inputs x_a, x_b (P, C, H, W) they frame each row."""
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    zs = (1 - t) * z_a.float().cpu().unsqueeze(1) + t * z_b.float().cpu().unsqueeze(1)  # (P, steps, D)
    images = model.decode(zs.flatten(0, 1)).cpu().view(len(z_a), steps, *model.image_shape)
    if x_a is not None and x_b is not None:
        images = torch.cat(
            [x_a.cpu().unsqueeze(1).to(images.dtype), images, x_b.cpu().unsqueeze(1).to(images.dtype)], 1
        )
    return _grid(images.flatten(0, 1), images.shape[1])


def save_png(grid: Tensor, path: str | Path) -> Path:
    """Write ``grid`` as a PNG, atomically (``runtime.atomic``): the file appears when complete."""
    from torchvision.utils import save_image

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"the output must be a .png file, got {str(path)!r}.")
    with atomic_open(path, "wb") as f:
        save_image(grid, f, format="png")
    return path
