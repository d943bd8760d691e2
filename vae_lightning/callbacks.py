"""Callbacks that draw pictures of the model while it trains (rank zero only)."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor


def log_image(trainer: Trainer, key: str, grid: Tensor, path: Path) -> None:
    """Save ``grid`` (C, H, W) in [0, 1] as PNG at ``path`` and send it to W&B / TensorBoard."""
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[grid], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, global_step=trainer.global_step)


class Checkpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that also writes ``last.ckpt`` when training ends between
    two validations (e.g. on ``max_steps``), so ``last.ckpt`` is always the final state."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and trainer.global_step != self._last_global_step_saved:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class ImageLogger(Callback):
    """Every ``every_n_val`` validations: reconstructions (inputs in odd rows, their
    reconstructions E[x|z=μ(x)] in the row below) and prior samples E[x|z], z ~ N(0, I).
    PNGs go to ``dirpath``; W&B and TensorBoard get them as images.

    Args:
        every_n_val: draw at every n-th validation (0: never).
        num_images: images per grid (a multiple of 8 looks best).
        dirpath: folder for the PNGs; None: ``<default_root_dir>/images`` (``vae fit`` sets
            ``<default_root_dir>/images/version_N``, one folder per run).
    """

    def __init__(self, every_n_val: int = 1, num_images: int = 32, dirpath: str | None = None) -> None:
        if every_n_val < 0 or num_images < 1:
            raise ValueError(f"ImageLogger needs every_n_val >= 0 and num_images >= 1, got {every_n_val}, {num_images}.")
        self.every_n_val, self.num_images = every_n_val, num_images
        self.dirpath = dirpath
        self._inputs: Tensor | None = None
        self._count = 0

    def _val_inputs(self, trainer: Trainer) -> Tensor:
        if self._inputs is None:  # the same inputs at every validation, so pictures compare
            xs, n = [], 0
            for batch in trainer.datamodule.val_dataloader():
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                xs.append(x)
                n += len(x)
                if n >= self.num_images:
                    break
            self._inputs = torch.cat(xs)[: self.num_images]
        return self._inputs

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self.every_n_val or trainer.datamodule is None:
            return
        self._count += 1
        if self._count % self.every_n_val:
            return
        self.draw(trainer, pl_module)

    def draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from torchvision.utils import make_grid

        x = self._val_inputs(trainer).to(pl_module.device)
        recon = pl_module.reconstruct(x).to(x.dtype)
        rows = 8
        pairs = [t for i in range(0, len(x), rows) for t in (x[i : i + rows], recon[i : i + rows])]
        folder = Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "images"
        step = trainer.global_step
        log_image(trainer, "images/reconstructions", make_grid(torch.cat(pairs).cpu(), nrow=rows, pad_value=0.5),
                  folder / f"reconstructions_step{step:07d}.png")
        generator = torch.Generator().manual_seed(0)  # the same latents every time
        samples = pl_module.sample(self.num_images, generator=generator)
        log_image(trainer, "images/samples", make_grid(samples.cpu(), nrow=rows, pad_value=0.5),
                  folder / f"samples_step{step:07d}.png")
