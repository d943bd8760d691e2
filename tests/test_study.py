"""Studies without a cluster: the grid of `vae slurm submit`, the same test set for every seed,
provenance in every run, and evaluations that continue their fit's W&B run."""

from __future__ import annotations

import subprocess

import pytest
import torch

from conftest import REPO, write_mnist_raw
from vae_lightning.cli.slurm import job_from_args, render
from vae_lightning.cli.study import folder, grid_from, tasks
from vae_lightning.data.base import images
from vae_lightning.data.sprites import SpritesDataModule
from vae_lightning.data.vision import MNISTDataModule
from vae_lightning.errors import UserError


# ---- the same test set for every seed (item 5) ---------------------------------------------------


def _batches(loader) -> torch.Tensor:
    return torch.cat([images(b) for b in loader])


def test_two_seeds_see_identical_mnist_val_and_test_tensors_but_train_differently(tmp_path):
    g = torch.Generator().manual_seed(3)
    gray = torch.randint(0, 256, (300, 28, 28), generator=g, dtype=torch.uint8)  # every pixel a coin of its own
    root = write_mnist_raw(tmp_path, "MNIST", gray, torch.zeros(300, dtype=torch.long), n_train=200)
    seen = {}
    for seed in (0, 1):
        data = MNISTDataModule(data_dir=str(root), seed=seed, val_size=50, batch_size=25)
        data.setup("fit")
        data.setup("test")
        seen[seed] = (_batches(data.val_dataloader()), _batches(data.test_dataloader()),
                      _batches(data.train_dataloader()))
    assert torch.equal(seen[0][0], seen[1][0]), "validation images differ between seeds"
    assert torch.equal(seen[0][1], seen[1][1]), "test images differ between seeds"
    assert set(seen[0][1].unique().tolist()) == {0.0, 1.0}  # the fixed binarization did run
    assert not torch.equal(seen[0][2], seen[1][2])  # the training stream still follows the seed


def test_two_seeds_see_identical_sprites_test_tensors():
    tests = []
    for seed in (0, 1):
        data = SpritesDataModule(seed=seed, num_images=500, val_size=40, batch_size=16)
        data.setup("test")
        tests.append(_batches(data.test_dataloader()))
    assert tests[0].shape == (40, 1, 64, 64) and torch.equal(tests[0], tests[1])


def test_split_seed_changes_the_test_set():
    a, b = SpritesDataModule(num_images=500, val_size=40), SpritesDataModule(num_images=500, val_size=40, split_seed=1)
    a.setup("test"), b.setup("test")
    assert not torch.equal(a.test_idx, b.test_idx)
