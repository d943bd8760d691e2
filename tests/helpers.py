"""What the test files share: the tiny run, the `vae` entry point (in this process and as a subprocess), data
laid out as torchvision expects it, and the fake SLURM environment. Fixtures live in conftest.py; test
files import this module and conftest, never each other."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import torch

from bench.chaos_inject import FAKE_SLURM, QUIET_CPU  # noqa: F401 (FAKE_SLURM: for the test files)
from vae_lightning.data.base import VAEDataModule
from vae_lightning.data.loader import TensorSource

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
IN_CI = os.environ.get("CI", "").lower() == "true"
TINY_YAML = Path(__file__).parent / "fixtures" / "tiny.yaml"

# a model small enough for steps of a few milliseconds (command-line arguments of `vae`)
TINY_MODEL = [
    "--model",
    "vae_lightning.VAE",
    "--model.init_args.latent_dim",
    "4",
    "--model.init_args.encoder",
    "vae_lightning.MLPEncoder",
    "--model.init_args.encoder.init_args.hidden",
    "[32]",
    "--model.init_args.decoder",
    "vae_lightning.MLPDecoder",
    "--model.init_args.decoder.init_args.hidden",
    "[32]",
]


# the tiny run's model (tests/fixtures/tiny.yaml) as `vae` flags, for runs that name their model class elsewhere
TINY_NETS = [
    "--model.init_args.latent_dim",
    "4",
    "--model.init_args.encoder",
    "vae_lightning.MLPEncoder",
    "--model.init_args.encoder.init_args.hidden",
    "[16]",
    "--model.init_args.decoder",
    "vae_lightning.MLPDecoder",
    "--model.init_args.decoder.init_args.hidden",
    "[16]",
]


class TinyData(VAEDataModule):
    """64 fixed random binary images of 8 × 8 pixels, the same for training and validation."""

    image_shape = (1, 8, 8)

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        images = (torch.rand(64, 1, 8, 8, generator=g) < 0.3).to(torch.uint8) * 255
        self.train_source = self.val_source = TensorSource(images, torch.zeros(64))

    @property
    def binary(self):
        return True


def _flag_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_flag_value(v) for v in value) + "]"
    return str(value)


def tiny_args(**overrides) -> list[str]:
    """`vae` arguments of the tiny run (tests/fixtures/tiny.yaml), then one flag per override. A key names
    the option with `__` or `.` between its parts: ``tiny_args(trainer__max_steps=7)`` or
    ``tiny_args(**{"data.init_args.num_images": 64})``; a value True/False/None/list is written as in YAML."""
    args = ["--config", str(TINY_YAML)]
    for key, value in overrides.items():
        args += [f"--{key.replace('__', '.')}", _flag_value(value)]
    return args


def vae(capsys, *args: str) -> tuple[int, str]:
    """Run `vae ARGS` in this process; returns (exit status, stderr)."""
    from vae_lightning.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def vae_command() -> list[str]:
    """The real `vae` console script (or `python -m vae_lightning` where it is not installed)."""
    script = Path(sys.executable).parent / "vae"
    return [str(script)] if script.exists() else [sys.executable, "-m", "vae_lightning"]


def run_vae(
    *args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the real `vae` console script in a subprocess with W&B offline (slow tests only)."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [*vae_command(), *args], cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` and the sha256 of its bytes."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same(weights: dict, straight: dict, where: str) -> None:
    """Bitwise-equal state dicts, else the names of the tensors that differ."""
    assert weights.keys() == straight.keys()
    differ = [name for name in weights if not torch.equal(weights[name], straight[name])]
    assert not differ, f"{where}: weights differ from the uninterrupted run in {differ}"


# ---- data on disk ----------------------------------------------------------------------------------


def _write_idx(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_mnist_raw(root: Path, name: str, images, labels, n_train: int = 9000) -> Path:
    """Lay out uint8 images (N, 28, 28) and labels as torchvision's `<root>/<name>/raw` IDX files:
    the first n_train as the train split, the rest as the test split."""
    import numpy as np

    def idx_images(x) -> bytes:
        return b"\x00\x00\x08\x03" + np.array(x.shape, ">i4").tobytes() + x.numpy().tobytes()

    def idx_labels(y) -> bytes:
        return b"\x00\x00\x08\x01" + np.array([len(y)], ">i4").tobytes() + y.numpy().astype("u1").tobytes()

    raw = root / name / "raw"
    _write_idx(raw / "train-images-idx3-ubyte", idx_images(images[:n_train]))
    _write_idx(raw / "train-labels-idx1-ubyte", idx_labels(labels[:n_train]))
    _write_idx(raw / "t10k-images-idx3-ubyte", idx_images(images[n_train:]))
    _write_idx(raw / "t10k-labels-idx1-ubyte", idx_labels(labels[n_train:]))
    return root


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_celeba(tmp_path: Path, monkeypatch, parts=(0, 0, 0, 0, 1, 1, 2, 2), noise: bool = False) -> None:
    """A CelebA folder in torchvision's layout under ``tmp_path/celeba``, one image per entry of
    ``parts`` (0 train, 1 valid, 2 test), with checksums of these files."""
    import numpy as np
    from PIL import Image
    from torchvision.datasets import CelebA

    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, len(parts) + 1)]
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8) if noise else None
        image = Image.fromarray(pixels) if noise else Image.new("RGB", (178, 218), (40 * i % 256, 100, 200))
        image.save(root / "img_align_celeba" / name)
    count = len(names)
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, parts, strict=True)))
    (root / "list_attr_celeba.txt").write_text(f"{count}\nSmiling Young\n" + "".join(f"{n} 1 -1\n" for n in names))
    (root / "identity_CelebA.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)))
    bbox = "".join(f"{n} 1 2 3 4\n" for n in names)
    (root / "list_bbox_celeba.txt").write_text(f"{count}\nimage_id x_1 y_1 width height\n" + bbox)
    (root / "list_landmarks_align_celeba.txt").write_text(
        f"{count}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
        "leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n" + "".join(f"{n} 1 2 3 4 5 6 7 8 9 10\n" for n in names)
    )
    monkeypatch.setattr(
        CelebA,
        "file_list",
        [(fid, md5(root / f) if (root / f).exists() else digest, f) for fid, digest, f in CelebA.file_list],
    )


# ---- exact resume of a file-backed data module (image folders, CelebA, streamed chunks) -------------------
FILE_RUN = [
    *TINY_MODEL,
    "--model.init_args.likelihood",
    "vae_lightning.Gaussian",
    *QUIET_CPU,
    "--trainer.limit_val_batches",
    "1",
    "--images.every_n_val",
    "0",
]


def fit_file_run(root, data: list[str], max_steps: int, ckpt_path=None) -> tuple[int, dict]:
    """FILE_RUN on ``data`` (the --data flags) in this process: (global step, weights)."""
    from vae_lightning.cli.lightning import VAECLI

    cli = VAECLI(
        [*FILE_RUN, *data, "--trainer.default_root_dir", str(root), "--trainer.max_steps", str(max_steps)], run=False
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return cli.trainer.global_step, {k: v.detach().clone() for k, v in cli.model.state_dict().items()}


def resume_matches_straight(tmp_path, data: list[str]) -> None:
    """40 steps straight equal 17 steps + a resume from last.ckpt to 40, bit for bit."""
    steps, straight = fit_file_run(tmp_path / "straight", data, 40)
    assert steps == 40
    assert fit_file_run(tmp_path / "part", data, 17)[0] == 17
    (last,) = (tmp_path / "part").rglob("last.ckpt")
    assert torch.load(last, weights_only=False)["global_step"] == 17
    steps, resumed = fit_file_run(tmp_path / "resumed", data, 40, ckpt_path=str(last))
    assert steps == 40
    assert_same(resumed, straight, "17 steps + resume to 40")


# ---- files and scripts -----------------------------------------------------------------------------


def tree(root: Path) -> dict[str, float | None]:
    """Every path under ``root``, with its file's mtime (a folder's changes when a path is proved writable)."""
    return {str(p.relative_to(root)): p.stat().st_mtime if p.is_file() else None for p in root.rglob("*")}


def unquoted(script: str) -> str:
    """The parts of ``script`` that bash would expand or run: everything outside single quotes
    (``'...'``, which bash takes literally) and outside comments; what is inside double quotes is
    expanded, so it stays (a ``'`` there opens nothing)."""
    out, i, n = [], 0, len(script)
    while i < n:
        c = script[i]
        if c == '"':
            end = i + 1
            while script[end] != '"':  # an unclosed quote is a broken script: IndexError
                end += 2 if script[end] == "\\" else 1
            out.append(script[i : end + 1])
            i = end + 1
        elif c == "'":
            end = script.index("'", i + 1)  # an unclosed quote is a broken script: ValueError
            i = end + 1
        elif c == "#" and (i == 0 or script[i - 1] in " \t\n"):
            end = script.find("\n", i)
            i = n if end < 0 else end
        elif c == "\\" and i + 1 < n:
            out.append(script[i : i + 2])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)
