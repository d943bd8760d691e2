"""`vae data prepare` and StreamingDataModule: the chunks hold the images at the target size with
their labels, an interrupted prepare leaves no complete-looking folder, bad prepared folders are
refused with one sentence and exit status 2 before training, and a streamed run stopped at step
17 and resumed ends bitwise equal to 40 steps straight."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import FILE_RUN, REPO, resume_matches_straight, write_celeba, write_mnist_raw
from vae_lightning.cli import main
from vae_lightning.cli.prepare import prepare
from vae_lightning.data import StreamingDataModule
from vae_lightning.data.vision import _transform
from vae_lightning.errors import UserError


def write_labelled_images(folder, n: int) -> dict[bytes, int]:
    """n noise images in two class folders; returns {the 8-px uint8 image's bytes: its label}."""
    rng = np.random.default_rng(2)
    expected, to8 = {}, _transform(8, 3, scale=False)
    for i in range(n):
        label, name = i % 2, ("cat", "dog")[i % 2]
        (folder / name).mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(rng.integers(0, 256, (14, 11, 3), dtype=np.uint8))
        image.save(folder / name / f"{i:03d}.png")
        expected[to8(image).numpy().tobytes()] = label
    return expected


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A folder of 52 images prepared at 8 px with two workers: 46 train, 6 val."""
    root = tmp_path_factory.mktemp("stream")
    expected = write_labelled_images(root / "images", 52)
    dst = prepare(str(root / "images"), str(root / "dst"), image_size=8, val_size=6, num_workers=2, chunk_bytes="4KB")
    return dst, expected


def all_batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.mark.slow
def test_prepare_writes_every_image_at_the_target_size_with_its_label(prepared):
    dst, expected = prepared
    meta = json.loads((dst / "vae_data.json").read_text())
    assert meta["image_shape"] == [3, 8, 8] and meta["splits"] == {"train": 46, "val": 6}
    assert meta["target_names"] == ["cat", "dog"]
    assert len(list((dst / "train").glob("*.bin"))) > 1  # several chunks (and workers)
    assert not [p for p in dst.parent.iterdir() if "partial" in p.name]
    dm = StreamingDataModule(str(dst), batch_size=5, num_workers=0)
    seen = {}
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        for x, y in all_batches(loader):
            assert x.shape[1:] == (3, 8, 8) and x.dtype == torch.float32
            for image, label in zip(x, y, strict=True):
                seen[(image * 255).round().to(torch.uint8).numpy().tobytes()] = int(label)
    # train drops its last incomplete batch (46 = 9 × 5 + 1): all but one image, each with its label
    assert len(seen) >= 51 and all(expected[key] == label for key, label in seen.items())


@pytest.mark.slow
def test_streaming_shuffles_by_seed_with_a_new_order_each_epoch(prepared):
    dst, _ = prepared
    labels = lambda loader: torch.cat([x[:, 0, 0, 0] for x, _ in loader])  # noqa: E731
    a = StreamingDataModule(str(dst), batch_size=5, num_workers=0, seed=1).train_dataloader()
    b = StreamingDataModule(str(dst), batch_size=5, num_workers=0, seed=1).train_dataloader()
    c = StreamingDataModule(str(dst), batch_size=5, num_workers=0, seed=2).train_dataloader()
    first, again, other = labels(a), labels(b), labels(c)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first, labels(a))  # the second epoch of the same loader


@pytest.mark.slow
def test_streamed_run_resumes_mid_epoch_to_bitwise_equal_weights(tmp_path, prepared):
    dst, _ = prepared  # 46 train images at batch 6: 7 steps an epoch, 17 is mid-epoch
    resume_matches_straight(
        tmp_path,
        [
            "--data",
            "vae_lightning.data.StreamingDataModule",
            "--data.init_args.data_dir",
            str(dst),
            "--data.init_args.batch_size",
            "6",
            "--data.init_args.num_workers",
            "0",
        ],
    )


@pytest.mark.slow
def test_prepare_of_a_broken_image_names_it_and_leaves_nothing(tmp_path):
    write_labelled_images(tmp_path / "images", 6)
    (tmp_path / "images" / "cat" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    with pytest.raises(UserError, match=r"cannot read image '.*bad\.png'"):
        prepare(str(tmp_path / "images"), str(tmp_path / "dst"), image_size=8, val_size=2, num_workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # no DST, no partial sibling


@pytest.mark.slow
def test_a_killed_prepare_never_leaves_a_folder_that_looks_complete(tmp_path):
    write_labelled_images(tmp_path / "images", 400)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vae_lightning",
            "data",
            "prepare",
            str(tmp_path / "images"),
            str(tmp_path / "dst"),
            "--image-size",
            "8",
            "--num-workers",
            "2",
            "--chunk-bytes",
            "2KB",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # kill it while it writes chunks: the first chunk file appears in the hidden partial folder
        while proc.poll() is None and not list(tmp_path.glob(".dst.partial-*/train/*.bin")):
            time.sleep(0.05)
        assert proc.poll() is None, "prepare finished before it could be killed; give it more images"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (tmp_path / "dst").exists()
    with pytest.raises(UserError, match="is missing, so this is not a complete prepared data set"):
        StreamingDataModule(str(tmp_path / "dst"))


@pytest.mark.slow
def test_prepare_reads_a_torchvision_set_and_celeba(tmp_path, monkeypatch, mnist_test_split):
    x, y = mnist_test_split
    write_mnist_raw(tmp_path / "tv", "MNIST", x[:1300], y[:1300], n_train=1100)
    dst = prepare(str(tmp_path / "tv"), str(tmp_path / "mnist"), kind="mnist", val_size=100, num_workers=2)
    dm = StreamingDataModule(str(dst), batch_size=200, num_workers=0)
    assert dm.image_shape == (1, 28, 28) and dm.meta["splits"] == {"train": 1000, "val": 100, "test": 200}
    images, labels = (torch.cat(t) for t in zip(*all_batches(dm.test_dataloader()), strict=True))
    order = torch.tensor(
        [next(i for i in range(1100, 1300) if torch.equal(x[i], (im[0] * 255).round().byte())) for im in images[:5]]
    )  # the test split's images, unchanged, with their labels
    assert torch.equal(labels[:5], y[order])
    write_celeba(
        tmp_path / "cel", monkeypatch, parts=[0] * 5 + [1, 1, 2, 2], noise=True
    )  # torchvision needs two per split
    dm = StreamingDataModule(str(prepare(str(tmp_path / "cel"), str(tmp_path / "celeba"), image_size=8)), batch_size=5)
    assert dm.image_shape == (3, 8, 8) and dm.meta["splits"] == {"train": 5, "val": 2, "test": 2}
    _, attrs = next(iter(dm.train_dataloader()))
    assert dm.meta["target_names"] == ["Smiling", "Young"]
    assert torch.equal(attrs, torch.tensor([[1, 0]] * 5))  # the fake attributes are "1 -1", as 0/1


def _damage(dst, how: str) -> list[str]:
    """Break a copy of the prepared folder; returns the extra `vae fit` arguments of the case."""
    meta = json.loads((dst / "vae_data.json").read_text())
    chunk = sorted((dst / "train").glob("*.bin"))[0]
    if how == "no index":
        (dst / "train" / "index.json").unlink()
    elif how == "corrupt index":
        (dst / "train" / "index.json").write_text('{"chunks": [')
    elif how == "truncated chunk":
        chunk.write_bytes(chunk.read_bytes()[:-10])
    elif how in ("format version", "litdata version"):
        meta["version" if how == "format version" else "litdata"] = 0 if how == "format version" else "0.1.9"
        (dst / "vae_data.json").write_text(json.dumps(meta))
    elif how == "data image size":
        return ["--data.init_args.image_size", "16"]
    elif how == "model image size":
        return ["--model.init_args.image_shape", "[3, 16, 16]"]
    return []


BAD = {
    "no index": "train/index.json is missing",
    "corrupt index": "chunk index .* is corrupt",
    "truncated chunk": r"chunk .*\.bin is \d+ bytes, the index says",
    "format version": "format version 0",
    "litdata version": "prepared with litdata 0.1.9",
    "data image size": "image_size is 16 but .* holds 8×8",
    "model image size": r"image_shape is \(3, 16, 16\) but StreamingDataModule yields \(3, 8, 8\)",
}


@pytest.mark.parametrize("how", list(BAD))
@pytest.mark.slow
def test_a_bad_prepared_folder_is_one_sentence_and_exit_2_before_training(tmp_path, prepared, capsys, how):
    dst = tmp_path / "dst"
    shutil.copytree(prepared[0], dst)
    extra = _damage(dst, how)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                *FILE_RUN,
                "--data",
                "vae_lightning.data.StreamingDataModule",
                "--data.init_args.data_dir",
                str(dst),
                "--trainer.default_root_dir",
                str(tmp_path / "run"),
                "--trainer.max_steps",
                "2",
                *extra,
            ]
        )
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("vae: error: ") and re.search(BAD[how], err), err
    assert not list(tmp_path.rglob("*.ckpt"))  # refused before training


@pytest.mark.parametrize("case", ["dst under a file", "dst exists", "dst is a url", "no src"])
def test_prepare_refuses_a_bad_dst_or_src_with_one_line_before_any_work(tmp_path, capsys, case):
    write_labelled_images(tmp_path / "images", 2)
    (tmp_path / "a_file").write_text("")
    (tmp_path / "done").mkdir()
    src, dst, match = str(tmp_path / "images"), str(tmp_path / "a_file" / "sub" / "dst"), "cannot be written"
    if case == "dst exists":
        dst, match = str(tmp_path / "done"), "already exists"
    elif case == "dst is a url":
        dst, match = "s3://bucket/dst", "is a URL; prepare into a local folder"
    elif case == "no src":
        src, dst, match = str(tmp_path / "nowhere"), str(tmp_path / "dst"), "is not a folder"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", src, dst])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and match in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "done", "images"]  # nothing written
