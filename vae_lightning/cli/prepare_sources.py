"""What ``vae data prepare`` reads: the splits of an image folder, of CelebA, or of a torchvision
set, each as (an encoder LitData's workers call, its inputs). Inputs are plain integers (item
numbers or block starts): LitData treats strings in its inputs as files to fetch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vae_lightning.data.base import split
from vae_lightning.data.vision import _transform
from vae_lightning.errors import UserError

BLOCK = 1000  # images per input of a torchvision set: one input is one worker task
ERROR_MARK = "vae-prepare-error: "  # a worker's UserError crosses LitData's process boundary as text


class FileItems:
    """Item i: the image file ``paths[i]`` decoded, cropped and resized to uint8 (C, H, W), with
    ``targets[i]`` (int64, shape () or (K,))."""

    def __init__(self, paths: list[str], targets: np.ndarray, image_size: int, channels: int, crop: int | None) -> None:
        self.paths, self.targets = paths, targets
        self.image_size, self.channels, self.crop = image_size, channels, crop
        self._transform = None  # built in the worker

    def __call__(self, i: int) -> dict:
        from PIL import Image

        if self._transform is None:
            self._transform = _transform(self.image_size, self.channels, crop=self.crop, scale=False)
        try:
            with Image.open(self.paths[i]) as im:
                image = im.convert("L" if self.channels == 1 else "RGB")
        except Exception as err:  # PIL raises many types for broken files
            raise UserError(f"{ERROR_MARK}cannot read image {self.paths[i]!r} ({err}); remove or replace it.") from None
        target = self.targets[i]  # a class label as int, attributes as an array (LitData's fast serializers)
        return {"image": self._transform(image).numpy(), "target": int(target) if target.ndim == 0 else target}


class VisionItems:
    """Input s: images s … s + BLOCK - 1 of a torchvision set (MNIST, CIFAR-10, …) as uint8
    (C, H, W), resized when ``image_size`` differs from theirs, with their class labels."""

    def __init__(self, name: str, root: str, train: bool, indices: np.ndarray, image_size: int | None) -> None:
        self.name, self.root, self.train, self.indices, self.image_size = name, root, train, indices, image_size
        self._data = None  # loaded in the worker

    def __call__(self, start: int):
        if self._data is None:
            self._data = load_vision(self.name, self.root, self.train)
        images, labels = self._data
        for i in self.indices[start : start + BLOCK]:
            image = images[i]
            if self.image_size is not None and image.shape[-1] != self.image_size:
                from torchvision.transforms import v2

                image = v2.Resize(self.image_size, antialias=True)(image)
            yield {"image": image.numpy(), "target": int(labels[i])}


def load_vision(name: str, root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) uint8 and labels (N,) of a torchvision set already on disk."""
    import torchvision.datasets

    try:
        ds = getattr(torchvision.datasets, name)(root, train=train, download=False)
    except RuntimeError as err:
        raise UserError(
            f"SRC {root!r} holds no complete {name} ({err}); download it first "
            f"(e.g. a {name} data module with download: true)."
        ) from None
    images = torch.as_tensor(ds.data)
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    return images.contiguous(), torch.as_tensor(ds.targets)


def folder(src: Path, image_size: int, channels: int, crop: int | None, val_size: float, seed: int):
    """Every image under ``src``, labelled by its first-level subfolder (0 for files in ``src``)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
    if not files:
        raise UserError(f"SRC {str(src)!r} holds no image files ({', '.join(IMG_EXTENSIONS)}).")
    classes = sorted({p.relative_to(src).parts[0] for p in files if len(p.relative_to(src).parts) > 1})
    label = {name: i for i, name in enumerate(classes)}
    targets = np.array([label.get(p.relative_to(src).parts[0], 0) for p in files], np.int64)
    train, val = split(len(files), val_size, seed)
    meta = {"image_shape": [channels, image_size, image_size], "target": "label", "target_names": classes or None}
    items = FileItems([str(p) for p in files], targets, image_size, channels, crop)
    return {"train": (items, train.tolist()), "val": (items, val.tolist())}, meta


def celeba(root: Path, image_size: int, crop: int):
    """CelebA's official partition; targets are the 40 attributes as 0/1."""
    from torchvision.datasets import CelebA

    splits = {}
    for ours, theirs in (("train", "train"), ("val", "valid"), ("test", "test")):
        try:
            ds = CelebA(str(root), split=theirs, target_type="attr", download=False)
        except RuntimeError as err:
            raise UserError(
                f"SRC {str(root)!r}: no complete CelebA under celeba/ ({err}); see the README's CelebA note."
            ) from None
        paths = [str(root / "celeba" / "img_align_celeba" / name) for name in ds.filename]
        items = FileItems(paths, ds.attr.numpy().astype(np.int64), image_size, 3, crop)
        splits[ours] = (items, list(range(len(paths))))
    meta = {"image_shape": [3, image_size, image_size], "target": "attributes", "target_names": ds.attr_names[:40]}
    return splits, meta


def vision(name: str, src: Path, image_size: int | None, val_size: float, seed: int):
    """A torchvision set's train split re-split into train/val, and its test split."""
    images, _ = load_vision(name, str(src), train=True)
    n_test = len(load_vision(name, str(src), train=False)[0])
    train, val = split(len(images), val_size, seed)
    shape = [images.shape[1], image_size or images.shape[2], image_size or images.shape[3]]
    splits = {}
    for part, idx, is_train in (("train", train, True), ("val", val, True), ("test", torch.arange(n_test), False)):
        items = VisionItems(name, str(src), is_train, idx.numpy(), image_size)
        splits[part] = (items, list(range(0, len(idx), BLOCK)))
    return splits, {"image_shape": shape, "target": "label", "target_names": None}
