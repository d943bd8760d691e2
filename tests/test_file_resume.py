"""Exact mid-epoch resume for the file-backed modules (image folders, CelebA): 40 steps straight
equal 17 steps + a resume from last.ckpt to 40, bit for bit; and FileBatchLoader resumes to the
same next batch at every position, with worker processes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import resume_matches_straight, write_celeba
from vae_lightning.data.files import FileBatchLoader
from vae_lightning.data.vision import ImageFiles


def write_noise_images(folder, n: int, size: int = 12) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")


@pytest.mark.slow
def test_image_folder_resumes_mid_epoch_to_bitwise_equal_weights(tmp_path):
    write_noise_images(tmp_path / "images", 46)  # 40 train at batch 6: 6 steps an epoch, 17 is mid-epoch
    resume_matches_straight(
        tmp_path,
        [
            "--data",
            "vae_lightning.data.ImageFolderDataModule",
            "--data.init_args.data_dir",
            str(tmp_path / "images"),
            "--data.init_args.image_size",
            "8",
            "--data.init_args.val_size",
            "6",
            "--data.init_args.batch_size",
            "6",
            "--data.init_args.num_workers",
            "1",
        ],
    )


@pytest.mark.slow
def test_celeba_resumes_mid_epoch_to_bitwise_equal_weights(tmp_path, monkeypatch):
    write_celeba(tmp_path, monkeypatch, parts=[0] * 20 + [1, 1, 2, 2], noise=True)  # 5 steps an epoch at batch 4
    resume_matches_straight(
        tmp_path,
        [
            "--data",
            "vae_lightning.data.CelebADataModule",
            "--data.init_args.data_dir",
            str(tmp_path),
            "--data.init_args.image_size",
            "8",
            "--data.init_args.batch_size",
            "4",
            "--data.init_args.num_workers",
            "0",
        ],
    )


def _files(loader, n=None):
    # the first pixel identifies a noise image
    return [x[:, 0, 0, 0].clone() for x, _ in itertools.islice(loader, n)]


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.slow
def test_file_loader_resumes_to_the_same_next_batch_with_workers(tmp_path, world_size):
    write_noise_images(tmp_path / "images", 23, size=4)
    files = ImageFiles(str(tmp_path / "images"), image_size=4, channels=3)

    def make(rank):
        return FileBatchLoader(
            files,
            torch.arange(len(files)),
            4,
            shuffle=True,
            drop_last=True,
            seed=5,
            rank=rank,
            world_size=world_size,
            num_workers=2,
        )

    for rank in range(world_size):
        reference = make(rank)
        epochs = [_files(reference) for _ in range(2)]
        assert not all(torch.equal(a, b) for a, b in zip(*epochs, strict=True))  # a new order every epoch
        flat = [b for e in epochs for b in e]
        for stop in range(1, len(flat)):
            first = make(rank)
            seen = []
            while len(seen) < stop:
                seen += _files(first, stop - len(seen))
            resumed = make(rank)
            resumed.load_state_dict(first.state_dict())
            rest = []
            while len(seen) + len(rest) < len(flat):
                rest += _files(resumed)
            assert all(torch.equal(a, b) for a, b in zip(seen + rest, flat, strict=True)), (rank, stop)
