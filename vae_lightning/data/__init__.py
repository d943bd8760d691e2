"""Data modules. Batches are ``(x, y)``: images (B, C, H, W) in [0, 1] and labels or factors."""

from vae_lightning.data.base import VAEDataModule
from vae_lightning.data.sprites import SpritesDataModule
from vae_lightning.data.streaming import StreamingDataModule
from vae_lightning.data.vision import (
    CelebADataModule,
    CIFAR10DataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)

__all__ = [
    "CIFAR10DataModule",
    "CelebADataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "SpritesDataModule",
    "StreamingDataModule",
    "VAEDataModule",
]
