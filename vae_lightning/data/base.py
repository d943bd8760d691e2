"""Shared behaviour of the data modules: batches are ``(x, y)`` with x of shape (B, C, H, W),
float in [0, 1] (or {0, 1} when binary), and y the labels or ground-truth factors."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor

from vae_lightning.data.loader import BatchLoader, Source
from vae_lightning.errors import UserError

BINARIZE = ("none", "dynamic", "fixed")


def images(batch) -> Tensor:
    """The images x (B, C, H, W) of a batch: ``(x, y)`` pairs and bare tensors alike."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def check_common(batch_size: int, binarize: str, val_size: int | float) -> None:
    if batch_size < 1:
        raise UserError(f"data.init_args.batch_size must be >= 1, got {batch_size}.")
    if binarize not in BINARIZE:
        raise UserError(f"data.init_args.binarize must be one of {', '.join(BINARIZE)}, got {binarize!r}.")
    # a count above 1 is whole: 1.5 was cut to 1 example, inf and nan were a traceback
    if not (0 <= val_size < 1 or (1 <= val_size < math.inf and float(val_size).is_integer())):
        raise UserError(
            f"data.init_args.val_size must be >= 0: a fraction below 1 or a whole number of examples, got {val_size}."
        )


def split(n: int, val_size: int | float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded train/val split of range(n): ``val_size`` examples (or that fraction if < 1).
    Both come in random order, so the first validation batch is a fair sample (for pictures)."""
    n_val = round(val_size * n) if val_size < 1 else int(val_size)
    if not 0 < n - n_val:
        raise UserError(f"val_size={val_size} leaves no training examples out of {n}.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]


def fixed_binarization(images: Tensor, seed: int) -> Tensor:
    """One seeded draw x ~ Bernoulli(pixel / 255) of uint8 images, kept for good (uint8 0/255)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty_like(images)
    for i in range(0, len(images), 4096):  # chunks keep the float copy small
        chunk = images[i : i + 4096].float().div_(255)
        out[i : i + 4096] = torch.bernoulli(chunk, generator=g).to(torch.uint8) * 255
    return out


class VAEDataModule(L.LightningDataModule):
    """Base class of the data modules.

    Base class. Subclasses set ``image_shape`` (C, H, W) and ``binary`` and build the
    sources in ``setup``; in-memory sources are served by ``BatchLoader``. Every data module
    takes ``seed`` and ``split_seed`` and passes them here; the ones that split take ``val_size``.

    Args:
        batch_size: examples per batch on each device.
        seed: seed of the shuffling and of dynamic binarization (the training stream).
        split_seed: seed of what is drawn once for the data set: the train/val split, a subset,
            the fixed binarization of evaluation images; independent of ``seed``, so runs of every
            seed are scored on the same images (a module with fixed splits draws nothing from it).
        binarize: ``none``; ``dynamic``: training pixels are drawn x ~ Bernoulli(intensity)
            anew every time, evaluation uses one fixed draw; ``fixed``: one fixed draw for all.
        on_device: hold (or render) the data on the training device and batch it there: None
            (default) when it is a CUDA GPU, True on any accelerator (e.g. MPS), False never.
    """

    image_shape: tuple[int, int, int]
    #: names and sizes of ground-truth factors in y, or None when y is a class label
    factor_names: tuple[str, ...] | None = None
    factor_sizes: tuple[int, ...] | None = None

    def __init__(
        self,
        batch_size: int = 128,
        seed: int = 0,
        binarize: str = "none",
        val_size: int | float = 0,
        on_device: bool | None = None,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        check_common(batch_size, binarize, val_size)
        self.batch_size, self.seed, self.binarize, self.val_size = batch_size, seed, binarize, val_size
        self.split_seed = split_seed
        self.on_device = on_device
        self.train_source: Source | None = None
        self.val_source: Source | None = None
        self.test_source: Source | None = None
        self.train_idx = self.val_idx = self.test_idx = None

    @property
    def binary(self) -> bool:
        """True when every pixel the model sees is 0 or 1."""
        return self.binarize != "none"

    @property
    def num_train(self) -> int | None:
        """Examples in the training split (the N of β-TCVAE's estimator); None before ``setup``."""
        if self.train_idx is not None:
            return len(self.train_idx)
        return len(self.train_source) if self.train_source is not None else None

    def _rank(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _loader(self, source: Source | None, idx: Tensor | None, train: bool) -> BatchLoader:
        if source is None:
            raise UserError(f"{type(self).__name__} has no data for this stage; call setup() first.")
        source = self._place(source)
        rank, world = self._rank()
        idx = torch.arange(len(source)) if idx is None else idx
        binarize = "dynamic" if train and self.binarize == "dynamic" else "none"
        return BatchLoader(
            source,
            idx,
            self.batch_size,
            shuffle=train,
            drop_last=train,
            seed=self.seed,
            binarize=binarize,
            rank=rank,
            world_size=world,
        )

    def source_device(self) -> torch.device | None:
        """Where the sources should live: the trainer's device when ``on_device`` asks for it."""
        t = self.trainer
        device = t.strategy.root_device if t is not None else None
        if device is None or device.type == "cpu" or self.on_device is False:
            return None
        return device if self.on_device or device.type == "cuda" else None

    def _place(self, source: Source) -> Source:
        """Move ``source`` to ``source_device()`` once; splits that share it keep sharing one copy."""
        device = self.source_device()
        if device is None or not hasattr(source, "to"):
            return source
        moved = source.to(device)
        for name in ("train_source", "val_source", "test_source"):
            if getattr(self, name) is source:
                setattr(self, name, moved)
        return moved

    def split_loader(self, split: str):
        """The batches of one split (``train``, ``val``, ``test`` or ``predict``) in data order,
        none shuffled or dropped, for ``vae encode``. A dynamically binarized train split gets
        one seeded draw; ``setup`` must have run for the split's stage."""
        if split == "predict":
            split = "test"  # what predict_dataloader serves
        source, idx = getattr(self, f"{split}_source"), getattr(self, f"{split}_idx")
        loader = self._loader(source, idx, train=False)
        if split == "train" and self.binarize == "dynamic":
            loader.binarize = "dynamic"
        return loader

    def train_dataloader(self):
        return self._loader(self.train_source, self.train_idx, train=True)

    def val_dataloader(self):
        return self._loader(self.val_source, self.val_idx, train=False)

    def test_dataloader(self):
        return self._loader(self.test_source, self.test_idx, train=False)

    def predict_dataloader(self):
        return self.test_dataloader()
