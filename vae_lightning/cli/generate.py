"""``vae sample`` for data sets: N generated images as a folder of PNGs or one .npz array.

    vae sample CKPT --num 10000 --out generated/            # 000000.png, 000001.png, ...
    vae sample CKPT --num 10000 --out generated.npz --draw  # images (N, C, H, W) uint8, z (N, D)

Latents are drawn from the model's prior (``VAE.prior_latents``: N(0, T²I) for the standard
normal, T = ``--temperature``) with a seeded generator; each image is
E[x|z] (``--mean``, the default) or one draw from p(x|z) (``--draw``: binary images for a
Bernoulli model; for an autoregressive decoder see ``VAE.decode``: one pass per pixel, and the
progress bar moves row by row). Work goes in chunks of ``--batch-size`` images, so memory does not grow with
N (the .npz is filled through memory-mapped files and zipped at the end). The folder or file
appears under its name only when complete (``vae_lightning.runtime.outputs``).

A PNG folder is what ``ImageFolderDataModule`` reads: gray PNGs for one channel, RGB for three,
pixels rounded to 8 bits.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vae_lightning.runtime.atomic import atomic_open
from vae_lightning.runtime.outputs import atomic_folder, progress


def row_progress(model, n: int, bar):
    """For a model whose decoder draws images pixel by pixel (autoregressive), a callback that
    moves ``bar`` through n images row by row (whole images only, n in all); else None."""
    if not getattr(model.decoder, "autoregressive", False):
        return None
    rows = model.image_shape[1]
    return lambda r: bar.update(n * (r + 1) // rows - n * r // rows)


def _chunks(model, num: int, seed: int, temperature: float, draw: bool, batch_size: int, bar=None):
    """(start, z (n, D), images (n, C, H, W) uint8) for consecutive chunks of the N samples; ``bar``,
    if given, counts the images (row by row for an autoregressive decoder, whose chunks take long)."""
    g_z, g_x = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        z = model.prior_latents(n, g_z, temperature)  # for N(0, I): T * torch.randn(n, D, generator=g_z)
        on_row = row_progress(model, n, bar) if bar is not None else None
        x = model.decode(z, draw=draw, generator=g_x, on_row=on_row).cpu()
        if bar is not None and on_row is None:
            bar.update(n)
        yield start, z, to_uint8(x)


def to_uint8(x: Tensor) -> Tensor:
    """Images in [0, 1] as 8-bit pixels (what a PNG holds)."""
    return x.mul(255).round_().clamp_(0, 255).to(torch.uint8)


def _save_png(image: Tensor, path: Path) -> None:
    from PIL import Image

    array = image.numpy()  # (C, H, W) uint8
    Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)).save(path, format="png")


def write_pngs(
    model, out: Path, num: int, seed: int = 0, temperature: float = 1.0, draw: bool = False, batch_size: int = 256
) -> Path:
    """N PNGs ``000000.png``… in the new folder ``out``."""
    digits = max(6, len(str(num - 1)))
    with atomic_folder(out) as tmp, progress(num, "vae sample", "img") as bar:
        for start, _, images in _chunks(model, num, seed, temperature, draw, batch_size, bar):
            for i, image in enumerate(images):
                _save_png(image, tmp / f"{start + i:0{digits}d}.png")
    return out


def write_npz(
    model, out: Path, num: int, seed: int = 0, temperature: float = 1.0, draw: bool = False, batch_size: int = 256
) -> Path:
    """One .npz with ``images`` (N, C, H, W) uint8 and ``z`` (N, D) float32."""
    shape = (num, *model.image_shape)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as work:
        images = np.lib.format.open_memmap(Path(work) / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
        zs = np.lib.format.open_memmap(Path(work) / "z.npy", mode="w+", dtype=np.float32, shape=(num, model.latent_dim))
        with progress(num, "vae sample", "img") as bar:
            for start, z, chunk in _chunks(model, num, seed, temperature, draw, batch_size, bar):
                images[start : start + len(chunk)] = chunk.numpy()
                zs[start : start + len(chunk)] = z.numpy()
        images.flush(), zs.flush()
        del images, zs  # close the maps before zipping
        with atomic_open(out, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name in ("images.npy", "z.npy"):
                zf.write(Path(work) / name, name)
    return out
