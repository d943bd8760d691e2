"""Fréchet Inception Distance (Heusel et al. 2017) between test images and prior samples, through
torchmetrics' ``FrechetInceptionDistance`` (the callback is ``vae_lightning.callbacks.FID``).
Lower is better; 0 means identical feature statistics. FID values are comparable only between
runs with the same feature extractor and the same number of images.
"""

from __future__ import annotations

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
