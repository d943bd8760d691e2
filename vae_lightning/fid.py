"""Fréchet Inception Distance (Heusel et al. 2017) between test images and prior samples, through
torchmetrics' ``FrechetInceptionDistance``. Lower is better; 0 means identical feature
statistics. FID values are comparable only between runs with the same feature extractor and
the same number of images.
"""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from vae_lightning.errors import UserError

INCEPTION_HELP = (
    "FID with the Inception network needs the torch-fidelity package and its weights, which are downloaded "
    "from GitHub on first use; run `pip install torch-fidelity` on a machine with internet once, or give "
    "fid.init_args.feature an nn.Module of your own"
)


def make_fid(feature: int | nn.Module = 2048) -> nn.Module:
    """A ``FrechetInceptionDistance`` on images in [0, 1]; ``feature``: an Inception feature size
    (64, 192, 768 or 2048) or any ``nn.Module`` mapping images (N, 3, H, W) in [0, 1] to (N, F)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    try:
        return FrechetInceptionDistance(feature=feature, normalize=True)
    except (ModuleNotFoundError, ImportError, OSError, RuntimeError) as err:  # package or weights missing
        raise UserError(f"{INCEPTION_HELP} ({type(err).__name__}).") from None


def rgb(x: Tensor) -> Tensor:
    """Images (N, C, H, W) in [0, 1] as 3 channels (gray repeated), float32 in [0, 1]."""
    x = x.float().clamp(0, 1)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class FID(Callback):
    """Logs ``test/fid`` at the end of ``vae test``: FID between the test images and as many prior
    samples E[x|z], z ~ N(0, I). Add it with ``--trainer.callbacks+=vae_lightning.fid.FID``.

    Args:
        feature: Inception feature size (64, 192, 768, 2048; needs torch-fidelity and its
            downloaded weights) or an ``nn.Module`` mapping images (N, 3, H, W) in [0, 1] to (N, F).
        max_images: at most this many test images per device (and as many samples).
        seed: seed of the prior draws (offset by the device's rank).
    """

    def __init__(self, feature: int | nn.Module = 2048, max_images: int = 10_000, seed: int = 0) -> None:
        if max_images < 2:
            raise ValueError(f"FID needs max_images >= 2, got {max_images}.")
        self.feature, self.max_images, self.seed = feature, max_images, seed
        self.metric: nn.Module | None = None
        self._seen = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "test" and self.metric is None:
            self.metric = make_fid(self.feature)

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.metric.to(pl_module.device).reset()
        self._seen = 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = x[: self.max_images - self._seen]
        if len(x):
            self.metric.update(rgb(x), real=True)
            self._seen += len(x)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        g = torch.Generator().manual_seed(self.seed + trainer.global_rank)
        for start in range(0, self._seen, 256):
            self.metric.update(rgb(pl_module.sample(min(256, self._seen - start), generator=g)), real=False)
        pl_module.log("test/fid", self.metric.compute(), sync_dist=False)  # already reduced over devices
        self.metric.reset()
