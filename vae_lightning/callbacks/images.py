"""``ImageLogger``: pictures of the model while it trains (rank zero only), and the helpers that
every picture-drawing callback uses to save a PNG and send it to the loggers."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from typing_extensions import override

from vae_lightning.data.base import images
from vae_lightning.errors import UserError
from vae_lightning.evaluation import pictures


def log_image(trainer: Trainer, key: str, grid: Tensor, path: Path) -> None:
    """Save ``grid`` (C, H, W) in [0, 1] as PNG at ``path`` (atomically) and send it to W&B / TensorBoard."""
    pictures.save_png(grid, path)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[grid], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, global_step=trainer.global_step)


def picture_dir(trainer: Trainer) -> Path:
    """The run's folder for PNGs: the ``ImageLogger``'s ``dirpath`` (``vae fit`` sets
    ``<default_root_dir>/images/version_N``), else ``<default_root_dir>/images``."""
    for callback in getattr(trainer, "callbacks", []):
        if isinstance(callback, ImageLogger) and callback.dirpath:
            return Path(callback.dirpath)
    return Path(trainer.default_root_dir) / "images"


MAX_GRID = 4096  # images in one grid, decoded in one batch (as `vae traverse` allows)


class ImageLogger(Callback):
    """Draws reconstructions, samples, traversals and interpolations during training.

    Every ``every_n_val`` validations, four pictures of the same validation inputs:

    - ``reconstructions``: inputs in odd rows, their reconstructions E[x|z=μ(x)] in the row below;
    - ``samples``: E[x|z] for fixed draws z ~ N(0, I);
    - ``traversals``: from μ of the first input, one row per latent dimension (most active first:
      largest Var_x(μ_u) over the inputs), that dimension set to −3 … +3;
    - ``interpolations``: rows from one input to another, decoding (1 − t)·μ_a + t·μ_b between
      the two inputs themselves.

    PNGs go to ``dirpath``; W&B and TensorBoard get them as images. Rank zero only. With an
    autoregressive decoder (``PixelCNNDecoder``) every picture is drawn pixel by pixel from z alone,
    and "E[x|z]" is the picture ``VAE.decode`` describes (each pixel's probability along a draw with
    one fixed noise image); drawing costs one decoder pass per pixel, so ``every_n_val`` matters.

    Args:
        every_n_val: draw at every n-th validation (0: never).
        num_images: images per reconstruction and sample grid (a multiple of 8 looks best).
        traverse_dims: latent dimensions shown in the traversals (0: no traversals).
        traverse_steps: values per traversal row, from −3 to +3.
        interpolations: rows of interpolations (0: none).
        interpolation_steps: decoded images between the two inputs of a row.
        dirpath: folder for the PNGs; None: ``<default_root_dir>/images`` (``vae fit`` sets
            ``<default_root_dir>/images/version_N``, one folder per run).
    """

    def __init__(
        self,
        every_n_val: int = 1,
        num_images: int = 32,
        traverse_dims: int = 10,
        traverse_steps: int = 7,
        interpolations: int = 4,
        interpolation_steps: int = 8,
        dirpath: str | None = None,
    ) -> None:
        counts = (
            every_n_val,
            num_images - 1,
            traverse_dims,
            traverse_steps - 2,
            interpolations,
            interpolation_steps - 2,
        )
        if min(counts) < 0:
            raise UserError(
                "ImageLogger needs every_n_val, traverse_dims, interpolations >= 0, num_images >= 1 and "
                f"traverse_steps, interpolation_steps >= 2; got {every_n_val}, {traverse_dims}, {interpolations}, "
                f"{num_images}, {traverse_steps}, {interpolation_steps}."
            )
        for names, count in (
            ("num_images", num_images),
            ("traverse_dims x traverse_steps", traverse_dims * traverse_steps),
            ("interpolations x interpolation_steps", interpolations * interpolation_steps),
        ):
            if count > MAX_GRID:  # one grid is decoded at once: more runs out of memory mid-run
                raise UserError(
                    f"ImageLogger's {names} is {count} images, more than one grid holds (at most {MAX_GRID}); "
                    "lower them (images.*)."
                )
        self.every_n_val, self.num_images = every_n_val, num_images
        self.traverse_dims, self.traverse_steps = traverse_dims, traverse_steps
        self.interpolations, self.interpolation_steps = interpolations, interpolation_steps
        self.dirpath = dirpath
        self._inputs: Tensor | None = None
        self._count = 0

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # rank 0's folder on every rank: another node's process never picked one (runtime/checkpoint.py)
        self.dirpath = trainer.strategy.broadcast(self.dirpath)

    def _val_inputs(self, trainer: Trainer) -> Tensor:
        if self._inputs is None:  # the same inputs at every validation, so pictures compare
            xs, n = [], 0
            wanted = max(self.num_images, 2 * self.interpolations)
            for batch in trainer.datamodule.val_dataloader():
                x = images(batch)
                xs.append(x)
                n += len(x)
                if n >= wanted:
                    break
            self._inputs = torch.cat(xs)[:wanted]
        return self._inputs

    @override
    @rank_zero_only
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self.every_n_val or trainer.datamodule is None:
            return
        self._count += 1
        if self._count % self.every_n_val:
            return
        self.draw(trainer, pl_module)

    def draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        x = self._val_inputs(trainer).to(pl_module.device)
        folder = picture_dir(trainer)
        step = trainer.global_step

        def log(name: str, grid: Tensor) -> None:
            log_image(trainer, f"images/{name}", grid, folder / f"{name}_step{step:07d}.png")

        log("reconstructions", pictures.reconstruction_grid(pl_module, x[: self.num_images]))
        log("samples", pictures.sample_grid(pl_module, self.num_images))  # seed 0: the same latents every time
        mu = pictures.encode_mean(pl_module, x)
        if self.traverse_dims:
            dims = pictures.activity_order(mu)[: self.traverse_dims]
            log("traversals", pictures.traversal_grid(pl_module, mu[0], dims, self.traverse_steps))
        pairs = min(self.interpolations, len(x) // 2)
        if pairs:
            a, b = slice(0, 2 * pairs, 2), slice(1, 2 * pairs, 2)
            log(
                "interpolations",
                pictures.interpolation_grid(pl_module, mu[a], mu[b], self.interpolation_steps, x[a], x[b]),
            )
