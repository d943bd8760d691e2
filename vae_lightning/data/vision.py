"""Data modules over torchvision's data sets and over any folder of images.

MNIST, Fashion-MNIST and CIFAR-10 are small: their images are loaded once into a uint8
tensor and served a batch at a time. CelebA and image folders stay on disk and are read by
``FileBatchLoader`` (DataLoader workers, a seeded order and a position that resumes mid-epoch).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from vae_lightning.data.base import VAEDataModule, fixed_binarization, split
from vae_lightning.data.files import FileBatchLoader
from vae_lightning.data.loader import TensorSource
from vae_lightning.errors import UserError


def _torchvision_set(cls, data_dir: str, download: bool, **kwargs):
    """Open a torchvision data set, turning its 'not found' errors into one clear sentence."""
    name = cls.__name__
    if not download and not Path(data_dir).is_dir():
        raise UserError(
            f"{name}: data_dir {data_dir!r} does not exist; set data.init_args.download: true "
            "to fetch it, or point data.init_args.data_dir at the folder that holds it."
        )
    try:
        return cls(data_dir, download=download, **kwargs)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted. You can use download=True"
        hint = "set data.init_args.download: true" if not download else "delete the partial files and retry"
        raise UserError(f"{name}: no complete copy under {data_dir!r} ({err}); {hint}.") from None
    except OSError as err:  # network errors while downloading
        raise UserError(
            f"{name}: download into {data_dir!r} failed ({err}); check the network or fetch the files by hand."
        ) from None


class _InMemoryVision(VAEDataModule):
    """torchvision set whose train split is re-split into train/val; its test split is test.

    Args:
        data_dir: folder that holds (or will hold) the data set's files, as torchvision lays them out.
        download: fetch the files if missing (needs internet).
        val_size: training images held out for validation (a fraction if < 1).
    """

    dataset_cls: type
    image_shape: tuple[int, int, int]

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        batch_size: int = 128,
        seed: int = 0,
        binarize: str = "dynamic",
        val_size: int | float = 5000,
        on_device: bool | None = None,
        split_seed: int = 0,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            seed=seed,
            binarize=binarize,
            val_size=val_size,
            on_device=on_device,
            split_seed=split_seed,
        )
        self.data_dir, self.download = os.path.expanduser(data_dir), download

    def prepare_data(self) -> None:
        if self.download:  # on one process only; setup() then reads the files
            for train in (True, False):
                _torchvision_set(self.dataset_cls, self.data_dir, True, train=train)

    def _images(self, train: bool) -> tuple[Tensor, Tensor]:
        ds = _torchvision_set(self.dataset_cls, self.data_dir, False, train=train)
        images = torch.as_tensor(ds.data)
        images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)  # (N, C, H, W)
        return images.contiguous(), torch.as_tensor(ds.targets)

    def _fixed(self, images: Tensor, salt: int) -> Tensor:
        # evaluation always sees one fixed draw; training too when binarize is "fixed"
        return images if self.binarize == "none" else fixed_binarization(images, self.split_seed + salt)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_source is None:
            images, targets = self._images(train=True)
            self.train_idx, self.val_idx = split(len(images), self.val_size, self.split_seed)
            self.val_source = TensorSource(self._fixed(images, 0), targets)
            # dynamic binarization draws from the gray images at every batch
            self.train_source = TensorSource(images, targets) if self.binarize == "dynamic" else self.val_source
        if stage in (None, "test", "predict") and self.test_source is None:
            images, targets = self._images(train=False)
            self.test_source = TensorSource(self._fixed(images, 1), targets)


class MNISTDataModule(_InMemoryVision):
    """MNIST digits, held in memory.

    MNIST (LeCun et al. 1998): 28×28 gray digits; 60,000 train (re-split into train/val) and
    10,000 test. Files under ``data_dir/MNIST/raw`` as torchvision lays them out.

    Args:
        data_dir: folder that holds (or will hold) ``MNIST/raw``.
        download: fetch the files if missing (needs internet).
        batch_size: examples per batch on each device.
        seed: seed of the shuffling and of dynamic binarization.
        binarize: ``dynamic`` (default, for the Bernoulli likelihood), ``fixed`` or ``none``.
        val_size: training images held out for validation (a fraction if < 1).
        on_device: keep the images on the training device (None: on a CUDA GPU).
        split_seed: seed of the train/val split and of the fixed draws of val/test images (the
            same for every ``seed``).
    """

    image_shape = (1, 28, 28)

    @property
    def dataset_cls(self):
        from torchvision.datasets import MNIST

        return MNIST


class FashionMNISTDataModule(_InMemoryVision):
    """Fashion-MNIST (Xiao et al. 2017): 28×28 gray clothing images, MNIST's layout and sizes.
    Same arguments as ``MNISTDataModule``; files under ``data_dir/FashionMNIST/raw``."""

    image_shape = (1, 28, 28)

    @property
    def dataset_cls(self):
        from torchvision.datasets import FashionMNIST

        return FashionMNIST


class CIFAR10DataModule(_InMemoryVision):
    """CIFAR-10 images, held in memory.

    CIFAR-10 (Krizhevsky 2009): 32×32 RGB; 50,000 train (re-split into train/val), 10,000
    test. Files under ``data_dir/cifar-10-batches-py``. Gray values by default (``binarize:
    none``), for the Gaussian likelihoods.

    Args:
        binarize: ``none`` (default), ``dynamic`` or ``fixed``.
        kwargs: ``MNISTDataModule``'s arguments: ``seed`` seeds the shuffling and dynamic
            binarization, ``split_seed`` the train/val split and the fixed draws.
    """

    image_shape = (3, 32, 32)

    def __init__(self, binarize: str = "none", **kwargs) -> None:
        # only the default differs (gray values for the Gaussian likelihoods); every other argument,
        # split_seed included, is the in-memory base's
        super().__init__(binarize=binarize, **kwargs)

    @property
    def dataset_cls(self):
        from torchvision.datasets import CIFAR10

        return CIFAR10


# ---- file-backed data ------------------------------------------------------------------------


def _transform(image_size: int, channels: int, crop: int | None = None, scale: bool = True):
    """PIL image -> (C, H, W): float in [0, 1], or uint8 when ``scale`` is False (vae data prepare)."""
    from torchvision.transforms import v2

    steps = [v2.CenterCrop(crop)] if crop else []
    steps += [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    if channels == 1:
        steps.append(v2.Grayscale())
    steps += [v2.ToDtype(torch.float32, scale=True)] if scale else [v2.ToPureTensor()]
    return v2.Compose([v2.ToImage(), *steps])


class ImageFiles(Dataset):
    """Every image file under ``root`` (recursively, sorted), as (x (C, H, W) in [0, 1], 0)."""

    def __init__(self, root: str, image_size: int, channels: int) -> None:
        from torchvision.datasets.folder import IMG_EXTENSIONS

        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise UserError(
                f"ImageFolderDataModule: data_dir {str(root)!r} is not a directory; point it at a folder of images."
            )
        self.files = sorted(p for p in root_path.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
        if not self.files:
            raise UserError(f"ImageFolderDataModule: no image files ({', '.join(IMG_EXTENSIONS)}) under {str(root)!r}.")
        self.transform = _transform(image_size, channels)
        self.mode = "L" if channels == 1 else "RGB"

    def check(self) -> None:
        """Open every file's header so that a broken file is named before training starts."""
        from PIL import Image

        for path in self.files:
            try:
                with Image.open(path) as im:
                    im.verify()
            except Exception as err:  # PIL raises many types for broken files
                raise UserError(
                    f"ImageFolderDataModule: cannot read image {str(path)!r} ({err}); remove or replace it."
                ) from None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image

        try:
            with Image.open(self.files[i]) as im:
                image = im.convert(self.mode)
        except Exception as err:
            raise UserError(f"cannot read image {str(self.files[i])!r} ({err}); remove or replace it.") from None
        return self.transform(image), 0


class _FileBacked(VAEDataModule):
    """Train/val/test over map-style data sets read by DataLoader workers."""

    def __init__(
        self, batch_size: int, seed: int, num_workers: int, val_size: int | float = 0, split_seed: int = 0
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, val_size=val_size, split_seed=split_seed)
        if num_workers < 0:
            raise UserError(f"data.init_args.num_workers must be >= 0, got {num_workers}.")
        self.num_workers = num_workers
        self.train_set = self.val_set = self.test_set = None

    def _dl(self, ds, train: bool) -> FileBatchLoader:
        if ds is None:
            raise UserError(f"{type(self).__name__} has no data for this stage; call setup() first.")
        rank, world = self._rank()
        # a resumable loader (not a shuffling DataLoader): a mid-epoch resume sees the same images
        return FileBatchLoader(
            ds,
            torch.arange(len(ds)),
            self.batch_size,
            shuffle=train,
            drop_last=train,
            seed=self.seed,
            rank=rank,
            world_size=world,
            num_workers=self.num_workers,
        )

    @property
    def num_train(self) -> int | None:
        return len(self.train_set) if self.train_set is not None else None

    def split_loader(self, split: str) -> FileBatchLoader:
        """One split's batches in data order (see ``VAEDataModule.split_loader``)."""
        return self._dl(getattr(self, f"{'test' if split == 'predict' else split}_set"), False)

    def train_dataloader(self):
        return self._dl(self.train_set, True)

    def val_dataloader(self):
        return self._dl(self.val_set, False)

    def test_dataloader(self):
        return self._dl(self.test_set, False)


class ImageFolderDataModule(_FileBacked):
    """Any folder of images, read from disk.

    Any folder of images (searched recursively; PNG, JPEG, …), resized and center-cropped to
    ``image_size`` and converted to gray (``channels: 1``) or RGB (``channels: 3``). A seeded
    ``val_size`` share is held out for validation and also used as the test split.

    Args:
        data_dir: folder of images.
        image_size: side of the square images the model sees, in pixels.
        channels: 1 (gray) or 3 (RGB).
        batch_size: examples per batch on each device.
        seed: seed of the shuffling.
        val_size: images held out for validation (a fraction if < 1).
        num_workers: DataLoader worker processes.
        split_seed: seed of the val/test split (the same for every ``seed``).
    """

    def __init__(
        self,
        data_dir: str = "images",
        image_size: int = 64,
        channels: int = 3,
        batch_size: int = 128,
        seed: int = 0,
        val_size: int | float = 0.1,
        num_workers: int = 2,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, seed, num_workers, val_size=val_size, split_seed=split_seed)
        if channels not in (1, 3):
            raise UserError(f"data.init_args.channels must be 1 (gray) or 3 (RGB), got {channels}.")
        if image_size < 1:
            raise UserError(f"data.init_args.image_size must be >= 1, got {image_size}.")
        self.data_dir, self.image_shape = data_dir, (channels, image_size, image_size)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        files = ImageFiles(self.data_dir, self.image_shape[1], self.image_shape[0])
        files.check()
        train, val = split(len(files), self.val_size, self.split_seed)
        self.train_set, self.val_set = Subset(files, train.tolist()), Subset(files, val.tolist())
        self.test_set = self.val_set


class CelebADataModule(_FileBacked):
    """CelebA faces, read from disk.

    CelebA (Liu et al. 2015) aligned faces, center-cropped to 148 px and resized to
    ``image_size`` (64 by default), with the official train/valid/test partition. Files under
    ``data_dir/celeba`` as torchvision lays them out. torchvision downloads from Google Drive,
    which often refuses automated downloads; if it fails, fetch ``img_align_celeba.zip`` and the
    ``list_*.txt`` files by hand into ``data_dir/celeba``.

    Args:
        data_dir: folder that holds (or will hold) ``celeba``.
        download: fetch the files if missing (needs internet).
        image_size: side of the square images, in pixels.
        batch_size: examples per batch on each device.
        seed: seed of the shuffling.
        num_workers: DataLoader worker processes.
        split_seed: seeds nothing here (the partition is CelebA's own); taken, as by every data
            module, so that one config or study can set it for any data.
    """

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        image_size: int = 64,
        batch_size: int = 128,
        seed: int = 0,
        num_workers: int = 4,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, seed, num_workers, split_seed=split_seed)
        self.data_dir, self.download = os.path.expanduser(data_dir), download
        self.image_shape = (3, image_size, image_size)

    def _split(self, split: str):
        from torchvision.datasets import CelebA

        tf = _transform(self.image_shape[1], 3, crop=148)
        return _torchvision_set(CelebA, self.data_dir, self.download, split=split, target_type="attr", transform=tf)

    def prepare_data(self) -> None:
        if self.download:
            self._split("all")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.download = False  # prepare_data fetched it on one process
            self.train_set, self.val_set, self.test_set = (
                self._split("train"),
                self._split("valid"),
                self._split("test"),
            )
