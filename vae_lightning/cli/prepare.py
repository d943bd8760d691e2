"""``vae data prepare SRC DST``: convert a data set into LitData's optimized chunks for streaming.

    vae data prepare ~/photos data/photos64 --image-size 64 --num-workers 8
    vae data prepare data data/celeba64                 # SRC holds celeba/ (torchvision's layout)
    vae data prepare data data/mnist-stream --kind mnist

SRC is a folder of images (searched recursively; the first-level subfolder names are the
labels), the CelebA folder (official train/valid/test partition, the 40 attributes as targets),
or the root folder of a torchvision data set (``--kind mnist|fashion-mnist|cifar10``). DST gets
one LitData folder per split (``train/``, ``val/``, ``test/``), each item ``{"image": uint8
(C, H, W), "target": int64 (...)}``, and ``vae_data.json`` (image shape, splits, versions),
which ``StreamingDataModule`` reads. Everything is written to a hidden sibling of DST and renamed
to DST at the end, so an interrupted prepare never leaves a DST that looks complete. Parsing the
arguments imports neither torch nor LitData.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path

from vae_lightning.cli import preflight
from vae_lightning.cli.arguments import Parser
from vae_lightning.cli.console import hyphenated, plain
from vae_lightning.data.format import FORMAT, FORMAT_VERSION, META
from vae_lightning.errors import UserError
from vae_lightning.runtime.outputs import check_output

KINDS = ("auto", "folder", "celeba", "mnist", "fashion-mnist", "cifar10")
VISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="vae data prepare",
        description=plain(__doc__.split("\n\n")[0]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="folder of images, the CelebA folder, or a torchvision root (with --kind)")
    p.add_argument("dst", help="new local folder for the chunks (must not exist yet)")
    p.add_argument(
        "--kind",
        choices=KINDS,
        default="auto",
        help="what SRC is (auto: celeba when SRC holds list_eval_partition.txt, else folder)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="side of the square images in pixels (default 64 for folders and CelebA, native for torchvision)",
    )
    p.add_argument("--channels", type=int, choices=(1, 3), default=3, help="1 gray or 3 RGB (folders only)")
    p.add_argument("--crop", type=int, default=None, help="center crop in pixels before the resize (CelebA: 148)")
    p.add_argument(
        "--val-size",
        type=float,
        default=0.1,
        help="images held out for validation, a fraction if < 1 (folders and torchvision train splits)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    p.add_argument("--num-workers", type=int, default=os.cpu_count() or 1, help="worker processes")
    p.add_argument("--chunk-bytes", default="64MB", help="size of one chunk file (LitData's chunk_bytes)")
    return p


def main(argv: list[str]) -> None:
    """``vae data ...``: one subcommand, ``prepare``."""
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: vae data prepare SRC DST [options]\n\nConvert a data set into LitData chunks for "
            "StreamingDataModule; see `vae data prepare --help`."
        )
        return
    if argv[0] != "prepare":
        raise UserError(f"unknown command `vae data {argv[0]}`; the only one is `vae data prepare SRC DST`.")
    a = _parser().parse_args(hyphenated(argv[1:]))
    prepare(
        a.src,
        a.dst,
        kind=a.kind,
        image_size=a.image_size,
        channels=a.channels,
        crop=a.crop,
        val_size=a.val_size,
        seed=a.seed,
        num_workers=a.num_workers,
        chunk_bytes=a.chunk_bytes,
    )


#: LitData's chunk_bytes: a whole number of bytes or a number with its units
CHUNK_BYTES = re.compile(r"\d+(\.\d+)?\s*([tgmk]b?|b)?", re.IGNORECASE)
MAX_SIDE = 4096  # pixels; one 4096² RGB image is 50 MB in memory


def _check_numbers(image_size: int | None, crop: int | None, val_size: float, seed: int, chunk_bytes: str) -> None:
    for flag, value in (("--image-size", image_size), ("--crop", crop)):
        if value is not None and not 1 <= value <= MAX_SIDE:
            raise UserError(f"{flag} must be between 1 and {MAX_SIDE} pixels, got {value}.")
    if not (0 < val_size < 1 or (1 <= val_size < math.inf and float(val_size).is_integer())):
        raise UserError(
            f"--val-size must be a fraction between 0 and 1 or a whole number of images (a validation split is "
            f"needed), got {val_size}."
        )
    preflight.check_seed("--seed", seed)
    if not CHUNK_BYTES.fullmatch(str(chunk_bytes).strip()) or not float(re.match(r"[\d.]+", chunk_bytes)[0]) > 0:
        raise UserError(f"--chunk-bytes must be a size such as 64MB, 512kb or 1000000 (bytes), got {chunk_bytes!r}.")


def _check_args(src: Path, dst: str, kind: str, image_size: int | None, val_size: float, num_workers: int) -> None:
    if "://" in dst:
        raise UserError(f"DST {dst!r} is a URL; prepare into a local folder, then upload it (e.g. `aws s3 sync`).")
    if Path(dst).expanduser().exists():
        raise UserError(f"DST {dst!r} already exists; choose a new folder or delete it first.")
    check_output("DST's parent folder", Path(dst).expanduser().absolute().parent, "dir")
    if not src.is_dir():
        raise UserError(
            f"SRC {str(src)!r} is not a folder; give a folder of images, the CelebA folder or a torchvision root."
        )
    if num_workers < 1:
        raise UserError(f"--num-workers must be >= 1, got {num_workers}.")
    if kind not in KINDS:
        raise UserError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}.")


def _celeba_root(src: Path) -> Path | None:
    """The folder that holds ``celeba/`` (torchvision's root), if SRC is or holds CelebA."""
    if (src / "celeba" / "list_eval_partition.txt").exists():
        return src
    if (src / "list_eval_partition.txt").exists() and src.name == "celeba":
        return src.parent
    return None


def prepare(
    src: str,
    dst: str,
    kind: str = "auto",
    image_size: int | None = None,
    channels: int = 3,
    crop: int | None = None,
    val_size: float = 0.1,
    seed: int = 0,
    num_workers: int = 1,
    chunk_bytes: str = "64MB",
) -> Path:
    """Write the splits of SRC as LitData chunks into DST (see the module docstring); returns DST."""
    src_path = Path(src).expanduser()
    _check_numbers(image_size, crop, val_size, seed, chunk_bytes)
    _check_args(src_path, dst, kind, image_size, val_size, num_workers)  # before torch is imported
    from vae_lightning.cli import prepare_sources as sources

    if kind == "auto":
        kind = "celeba" if _celeba_root(src_path) is not None else "folder"
    if kind == "celeba":
        root = _celeba_root(src_path)
        if root is None:
            raise UserError(
                f"SRC {src!r} has no celeba/list_eval_partition.txt; point it at the folder that holds celeba/."
            )
        splits, meta = sources.celeba(root, image_size or 64, crop or 148)
    elif kind == "folder":
        splits, meta = sources.folder(src_path, image_size or 64, channels, crop, val_size, seed)
    else:
        splits, meta = sources.vision(VISION[kind], src_path, image_size, val_size, seed)
    final = Path(dst).expanduser().absolute()
    partial = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        for name, (encode, inputs) in splits.items():
            _optimize(encode, inputs, partial / name, num_workers, chunk_bytes)
        meta.update(
            format=FORMAT,
            version=FORMAT_VERSION,
            litdata=_litdata_version(),
            source=str(src_path),
            kind=kind,
            splits={name: _count(partial / name) for name in splits},
        )
        (partial / META).write_text(json.dumps(meta, indent=1))
        os.replace(partial, final)  # the one step that makes DST exist, complete
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    print(
        f"vae data prepare: wrote {', '.join(f'{k} {v}' for k, v in meta['splits'].items())} images "
        f"of shape {tuple(meta['image_shape'])} to {final}"
    )
    return final


def _litdata_version() -> str:
    from importlib.metadata import version

    return version("litdata")


def _count(folder: Path) -> int:
    index = json.loads((folder / "index.json").read_text())
    return sum(chunk["chunk_size"] for chunk in index["chunks"])


def _optimize(encode, inputs: list, out: Path, num_workers: int, chunk_bytes: str) -> None:
    from litdata import optimize

    try:
        optimize(
            encode,
            inputs,
            str(out),
            num_workers=max(1, min(num_workers, len(inputs))),
            chunk_bytes=chunk_bytes,
            start_method="spawn",
        )  # fork can deadlock in a process with threads
    except RuntimeError as err:
        from vae_lightning.cli.prepare_sources import ERROR_MARK

        text = str(err)
        if ERROR_MARK in text:
            raise UserError(text.split(ERROR_MARK, 1)[1].splitlines()[0]) from None
        raise
