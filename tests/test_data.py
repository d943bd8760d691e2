"""Each data module on real (MNIST) or test-written files, including the bad-input cases."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import md5, write_celeba, write_mnist_raw
from vae_lightning import data
from vae_lightning.data import (
    CelebADataModule,
    CIFAR10DataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    SpritesDataModule,
    sprites,
)
from vae_lightning.errors import UserError


def first_batch(loader):
    return next(iter(loader))


# ---- sprites ---------------------------------------------------------------------------------


def test_sprites_grid_has_737280_images_and_factor_indices_round_trip():
    assert sprites.NUM_IMAGES == 737_280 == 3 * 6 * 40 * 32 * 32
    idx = torch.tensor([0, 1, 31, 32, 737_279, 123_456])
    factors = sprites.index_to_factors(idx)
    assert torch.equal(sprites.factors_to_index(factors), idx)
    assert factors[-2].tolist() == [2, 5, 39, 31, 31]
    assert (factors < torch.tensor(sprites.FACTOR_SIZES)).all()


def test_sprites_render_binary_shapes_that_move_scale_and_stay_inside():
    f = torch.tensor([[s, sc, 7, px, py] for s in range(3) for sc in (0, 5) for px in (0, 31) for py in (0, 31)])
    x = sprites.render(f)
    assert x.shape == (len(f), 1, 64, 64) and set(x.unique().tolist()) == {0.0, 1.0}
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1)
    assert border.sum() == 0  # no shape leaves the frame, even at full scale in a corner
    area = x.sum((1, 2, 3))
    assert (area[f[:, 1] == 5] > area[f[:, 1] == 0].mean()).all()  # bigger scale, more pixels
    ys, xs = torch.nonzero(x[0, 0] > 0, as_tuple=True)  # posX=0, posY=0: top-left
    ys2, xs2 = torch.nonzero(x[3, 0] > 0, as_tuple=True)  # posX=31, posY=31: bottom-right
    assert xs.float().mean() < 32 < xs2.float().mean() and ys.float().mean() < 32 < ys2.float().mean()


def test_sprites_module_is_deterministic_and_split_is_disjoint():
    a, b = (
        SpritesDataModule(batch_size=16, val_size=100, num_images=1000),
        SpritesDataModule(batch_size=16, val_size=100, num_images=1000),
    )
    a.setup("fit"), b.setup("fit")
    assert len(a.val_idx) == 100 and len(a.train_idx) == 900
    assert not set(a.train_idx.tolist()) & set(a.val_idx.tolist())
    (xa, fa), (xb, fb) = first_batch(a.train_dataloader()), first_batch(b.train_dataloader())
    assert torch.equal(xa, xb) and torch.equal(fa, fb)
    assert xa.shape == (16, 1, 64, 64) and fa.shape == (16, 5)
    assert torch.equal(xa, sprites.render(fa))  # the factors are the image's ground truth
    c = SpritesDataModule(batch_size=16, val_size=100, num_images=1000, split_seed=1)
    c.setup("fit")
    assert not torch.equal(c.val_idx, a.val_idx)
    d = SpritesDataModule(batch_size=16, val_size=100, num_images=1000, seed=1)  # the held-out split is fixed
    d.setup("fit")
    assert torch.equal(d.val_idx, a.val_idx)


def test_sprites_full_size_holds_no_images_in_memory():
    dm = SpritesDataModule(batch_size=8)
    dm.setup("fit")
    assert len(dm.train_idx) + len(dm.val_idx) == sprites.NUM_IMAGES
    assert not hasattr(dm.train_source, "images")  # rendered on demand


# ---- MNIST and Fashion-MNIST (real files) ----------------------------------------------------


def test_mnist_from_the_real_test_split_with_dynamic_and_fixed_binarization(mnist_dir, mnist_test_split):
    dm = MNISTDataModule(data_dir=str(mnist_dir), batch_size=100, val_size=1000, binarize="dynamic")
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_idx), len(dm.val_idx), len(dm.test_source)) == (8000, 1000, 1000)
    x, y = first_batch(dm.train_dataloader())
    assert x.shape == (100, 1, 28, 28) and set(x.unique().tolist()) == {0.0, 1.0}
    gray = mnist_test_split[0][:9000].float() / 255
    assert abs(x.mean().item() - gray.mean().item()) < 0.02  # Bernoulli(intensity) keeps the mean
    v1, v2 = first_batch(dm.val_dataloader()), first_batch(dm.val_dataloader())
    assert torch.equal(v1[0], v2[0]) and set(v1[0].unique().tolist()) == {0.0, 1.0}  # one fixed draw
    t, labels = first_batch(dm.test_dataloader())
    assert torch.equal(labels, mnist_test_split[1][9000:9100])
    gray_dm = MNISTDataModule(data_dir=str(mnist_dir), batch_size=100, binarize="none", val_size=0.1)
    gray_dm.setup("test")
    xt, _ = first_batch(gray_dm.test_dataloader())
    torch.testing.assert_close(xt[:, 0], mnist_test_split[0][9000:9100].float() / 255)


def test_fashion_mnist_reads_its_own_folder(tmp_path, mnist_test_split):
    x, y = mnist_test_split
    write_mnist_raw(tmp_path, "FashionMNIST", x[:1200], y[:1200], n_train=1000)
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), batch_size=50, val_size=100)
    dm.setup("fit")
    assert len(dm.train_idx) == 900
    assert first_batch(dm.train_dataloader())[0].shape == (50, 1, 28, 28)


def test_missing_mnist_without_download_is_one_clear_sentence(tmp_path):
    with pytest.raises(UserError, match=r"does not exist; set data.init_args.download: true"):
        MNISTDataModule(data_dir=str(tmp_path / "nowhere")).setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"MNIST: no complete copy under .*download: true"):
        MNISTDataModule(data_dir=str(tmp_path / "empty")).setup("fit")


# ---- CIFAR-10 and CelebA (test-written files in torchvision's layout) ------------------------


DATA_MODULES = [getattr(data, name) for name in data.__all__ if name != "VAEDataModule"]


@pytest.mark.parametrize("cls", DATA_MODULES, ids=lambda c: c.__name__)
def test_every_data_module_takes_seed_and_split_seed_from_the_base(cls):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(cls, "data")  # what `vae` reads, forwarded **kwargs included
    defaults = parser.get_defaults().data
    assert (defaults.seed, defaults.split_seed) == (0, 0)


def test_cifar10_changes_only_the_binarize_default():
    dm = CIFAR10DataModule(split_seed=3, val_size=20, seed=2)
    assert (dm.binarize, dm.split_seed, dm.seed, dm.val_size) == ("none", 3, 2, 20)
    assert MNISTDataModule().binarize == "dynamic"


def test_cifar10_reads_torchvision_batches(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        entry = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": list(range(10)) * 2}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    # our files, our checksums: the real loading code runs unchanged
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5(folder / n)] for n in names[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(folder / "batches.meta")})
    dm = CIFAR10DataModule(data_dir=str(tmp_path), batch_size=10, val_size=20)
    dm.setup("fit")
    dm.setup("test")
    x, y = first_batch(dm.train_dataloader())
    assert x.shape == (10, 3, 32, 32) and dm.binary is False
    first = pickle.loads((folder / "test_batch").read_bytes())["data"][0].reshape(3, 32, 32)
    torch.testing.assert_close(first_batch(dm.test_dataloader())[0][0], torch.tensor(first).float() / 255)


def test_celeba_reads_torchvision_layout_at_64px(tmp_path, monkeypatch):
    write_celeba(tmp_path, monkeypatch)
    dm = CelebADataModule(data_dir=str(tmp_path), batch_size=2, num_workers=0)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4, 2, 2)
    x, _ = first_batch(dm.train_dataloader())
    assert x.shape == (2, 3, 64, 64) and 0 <= x.min() and x.max() <= 1


# ---- image folders ---------------------------------------------------------------------------


def write_images(folder: Path, n: int, size=(40, 30)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sub = folder / ("a" if i % 2 else "b")  # nested folders are searched too
        sub.mkdir(exist_ok=True)
        Image.new("RGB", size, (i * 20 % 256, 50, 100)).save(sub / f"img{i}.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_resizes_and_converts(tmp_path, channels):
    write_images(tmp_path / "imgs", 10)
    dm = ImageFolderDataModule(
        data_dir=str(tmp_path / "imgs"), image_size=32, channels=channels, batch_size=4, val_size=2, num_workers=0
    )
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (8, 2)
    x, _ = first_batch(dm.train_dataloader())
    assert x.shape == (4, channels, 32, 32) and dm.image_shape == (channels, 32, 32)


def test_image_folder_bad_inputs_are_named(tmp_path):
    with pytest.raises(UserError, match="is not a directory"):
        ImageFolderDataModule(data_dir=str(tmp_path / "missing")).setup("fit")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match="no image files"):
        ImageFolderDataModule(data_dir=str(tmp_path / "empty")).setup("fit")
    write_images(tmp_path / "broken", 4)
    (tmp_path / "broken" / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(UserError, match=r"cannot read image '.*bad\.png'"):
        ImageFolderDataModule(data_dir=str(tmp_path / "broken"), num_workers=0).setup("fit")
