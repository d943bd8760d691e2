"""``FID``: logs ``test/fid`` at the end of ``vae test`` (the metric is ``evaluation.fid``)."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from typing_extensions import override

from vae_lightning.data.base import images
from vae_lightning.errors import UserError
from vae_lightning.evaluation.fid import make_fid, rgb


class FID(Callback):
    """Logs the Fréchet Inception Distance of prior samples at the end of vae test.

    Logs ``test/fid`` at the end of ``vae test``: FID between the test images and as many prior
    samples E[x|z], z ~ N(0, I). Add it with ``--trainer.callbacks+=vae_lightning.callbacks.FID``.

    Args:
        feature: Inception feature size (64, 192, 768, 2048; needs torch-fidelity and its
            downloaded weights) or an ``nn.Module`` mapping images (N, 3, H, W) in [0, 1] to (N, F).
        max_images: at most this many test images per device (and as many samples).
        seed: seed of the prior draws (offset by the device's rank).
    """

    def __init__(self, feature: int | nn.Module = 2048, max_images: int = 10_000, seed: int = 0) -> None:
        if max_images < 2:
            raise UserError(f"FID needs max_images >= 2, got {max_images}.")
        self.feature, self.max_images, self.seed = feature, max_images, seed
        self.metric: nn.Module | None = None
        self._seen = 0

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "test" and self.metric is None:
            self.metric = make_fid(self.feature)

    @override
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.metric.to(pl_module.device).reset()
        self._seen = 0

    @override
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        x = images(batch)
        x = x[: self.max_images - self._seen]
        if len(x):
            self.metric.update(rgb(x), real=True)
            self._seen += len(x)

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        g = torch.Generator().manual_seed(self.seed + trainer.global_rank)
        for start in range(0, self._seen, 256):
            self.metric.update(rgb(pl_module.sample(min(256, self._seen - start), generator=g)), real=False)
        pl_module.log("test/fid", self.metric.compute(), sync_dist=False)  # already reduced over devices
        self.metric.reset()
