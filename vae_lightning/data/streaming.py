"""``StreamingDataModule``: data prepared by ``vae data prepare``, streamed with LitData.

LitData's ``StreamingDataset`` reads the chunks from a local folder or from object storage
(``s3://``, ``gs://``) through a local cache, splits them across ranks and nodes itself (from
torch.distributed), and shuffles by seed with a new order every epoch. Its ``StreamingDataLoader``
saves its position (``state_dict``); Lightning stores it in the checkpoint, so a resumed run
continues at the same images. The prepared folder is checked when the module is built, before
training: a missing or corrupt chunk index, a missing or truncated chunk, a folder prepared by
another format or LitData version, and an image size other than the one asked for are each
refused with one sentence.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from typing_extensions import override

from vae_lightning.data.base import VAEDataModule
from vae_lightning.data.format import FORMAT, FORMAT_VERSION, META
from vae_lightning.errors import UserError

SPLITS = ("train", "val", "test")
KEY = "data.init_args.data_dir"


def _minor(text: str) -> tuple[str, ...]:
    return tuple(text.split(".")[:2])


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise UserError(
            f"{KEY}: {path} is missing, so this is not a complete prepared data set; "
            "run `vae data prepare SRC DST` (again) and point data_dir at DST."
        )
    try:
        loaded, problem = json.loads(path.read_text()), None
    except (OSError, ValueError) as err:
        loaded, problem = None, str(err)
    if not isinstance(loaded, dict):
        # raised outside the except clause: the one-sentence reader of constructor errors
        # (cli/explain.py) reports the innermost ValueError, which would be json's own
        problem = problem or "not a JSON object"
        raise UserError(f"{KEY}: the {what} {path} is corrupt ({problem}); run `vae data prepare` again.")
    return loaded


def _fetch(data_dir: str, name: str, cache_dir: str | None) -> Path:
    """``data_dir/name`` as a local file (downloaded into the cache for a remote data_dir)."""
    if "://" not in data_dir:
        return Path(data_dir).expanduser() / name
    from litdata.streaming.downloader import get_downloader

    local = (
        Path(cache_dir or tempfile.gettempdir())
        / "vae-streaming-meta"
        / hashlib.sha1(data_dir.encode()).hexdigest()[:16]
        / name
    )
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        get_downloader(data_dir, str(local.parent), []).download_file(f"{data_dir.rstrip('/')}/{name}", str(local))
        problem = None
    except Exception as err:  # boto3, gcsfs and obstore raise their own types
        problem = str(err)
    if problem is not None:  # outside the except clause, as in _read_json
        raise UserError(f"{KEY}: cannot read {data_dir.rstrip('/')}/{name} ({problem}); check the URL and credentials.")
    return local


def read_meta(data_dir: str, cache_dir: str | None = None) -> dict:
    """``vae_data.json`` of a prepared folder, after the checks on format and versions."""
    meta = _read_json(_fetch(data_dir, META, cache_dir), "description")
    if meta.get("format") != FORMAT or not isinstance(meta.get("image_shape"), list):
        raise UserError(f"{KEY}: {data_dir!r} does not hold data written by `vae data prepare`; prepare it first.")
    if meta.get("version") != FORMAT_VERSION:
        raise UserError(
            f"{KEY}: {data_dir!r} was prepared in format version {meta.get('version')}, this vae reads "
            f"version {FORMAT_VERSION}; run `vae data prepare` again."
        )
    have = version("litdata")
    if _minor(str(meta.get("litdata", ""))) != _minor(have):
        raise UserError(
            f"{KEY}: {data_dir!r} was prepared with litdata {meta.get('litdata')}, this is litdata {have}; "
            f"install litdata {meta.get('litdata')} or run `vae data prepare` again."
        )
    return meta


def check_chunks(folder: Path) -> None:
    """The chunk index of one local split is readable and every chunk it lists is whole."""
    index = _read_json(folder / "index.json", "chunk index")
    chunks = index.get("chunks")
    if not isinstance(chunks, list) or not chunks or "config" not in index:
        raise UserError(
            f"{KEY}: the chunk index {folder / 'index.json'} is corrupt (no chunks); run `vae data prepare` again."
        )
    for chunk in chunks:
        path = folder / str(chunk.get("filename"))
        size = path.stat().st_size if path.is_file() else None
        if size != chunk.get("chunk_bytes"):
            state = "missing" if size is None else f"{size} bytes, the index says {chunk.get('chunk_bytes')}"
            raise UserError(f"{KEY}: chunk {path} is {state}; run `vae data prepare` again.")


class StreamingBatches:
    """Batches ``(x, y)`` of a ``StreamingDataLoader``: x float (B, C, H, W) in [0, 1] (the
    uint8 chunks are converted after the workers, so 4× fewer bytes cross between processes),
    y the targets (B, ...). Its ``state_dict`` is the loader's, which Lightning saves."""

    def __init__(self, loader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self.loader:
            yield batch["image"].float().div_(255), batch["target"]

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)


class StreamingDataModule(VAEDataModule):
    """Images prepared by vae data prepare, streamed with LitData.

    Images prepared by ``vae data prepare`` (uint8 chunks with LitData), streamed from a local
    folder or object storage. Batches are x (B, C, H, W) float in [0, 1] and the targets; the
    image shape (C, H, W) comes from the prepared folder's ``vae_data.json``.

    Args:
        data_dir: the prepared folder (DST of ``vae data prepare``), or its ``s3://`` / ``gs://`` URL.
        cache_dir: where chunks of a remote data_dir are cached (None: LitData's default).
        image_size: the side in pixels the run expects; None takes the prepared size. A
            different prepared size is refused before training.
        batch_size: examples per batch on each device.
        num_workers: loader worker processes.
        seed: seed of the shuffling (LitData draws a new order every epoch from it).
        split_seed: seeds nothing here (``vae data prepare`` wrote the splits); taken, as by
            every data module, so that one config or study can set it for any data.
    """

    def __init__(
        self,
        data_dir: str = "data/stream",
        cache_dir: str | None = None,
        image_size: int | None = None,
        batch_size: int = 128,
        num_workers: int = 4,
        seed: int = 0,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, split_seed=split_seed)
        if num_workers < 0:
            raise UserError(f"data.init_args.num_workers must be >= 0, got {num_workers}.")
        self.data_dir, self.cache_dir, self.num_workers = data_dir, cache_dir, num_workers
        self.meta = read_meta(data_dir, cache_dir)
        self.image_shape = tuple(self.meta["image_shape"])
        if image_size is not None and image_size != self.image_shape[-1]:
            raise UserError(
                f"data.init_args.image_size is {image_size} but {data_dir!r} holds "
                f"{self.image_shape[-2]}×{self.image_shape[-1]} images; prepare it at {image_size} "
                f"(`vae data prepare --image-size {image_size}`) or set image_size: {self.image_shape[-1]}."
            )
        self.splits = [s for s in SPLITS if s in self.meta.get("splits", {})]
        if "train" not in self.splits or "val" not in self.splits:
            raise UserError(f"{KEY}: {data_dir!r} lacks a train or val split; run `vae data prepare` again.")
        if "://" not in data_dir:
            for name in self.splits:
                check_chunks(Path(data_dir).expanduser() / name)

    @property
    def num_train(self) -> int | None:
        return self.meta["splits"]["train"]

    def _url(self, name: str) -> str:
        return (
            f"{self.data_dir.rstrip('/')}/{name}"
            if "://" in self.data_dir
            else str(Path(self.data_dir).expanduser() / name)
        )

    def _loader(self, name: str, train: bool) -> StreamingBatches:
        from litdata import StreamingDataLoader, StreamingDataset

        cache = os.path.join(self.cache_dir, name) if self.cache_dir else None
        try:
            dataset = StreamingDataset(self._url(name), cache_dir=cache, shuffle=train, drop_last=train, seed=self.seed)
        except (ValueError, RuntimeError, OSError) as err:
            raise UserError(
                f"{KEY}: LitData cannot open the {name} split of {self.data_dir!r} ({err}); "
                "run `vae data prepare` again."
            ) from None
        # its own generator: a DataLoader iterator otherwise draws its workers' base seed from
        # torch's global RNG, which would shift the training noise after a resume
        loader = StreamingDataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            drop_last=train,
            generator=torch.Generator().manual_seed(self.seed),
        )
        return StreamingBatches(loader)

    @override
    def train_dataloader(self):
        return self._loader("train", train=True)

    @override
    def val_dataloader(self):
        return self._loader("val", train=False)

    @override
    def test_dataloader(self):
        return self._loader("test" if "test" in self.splits else "val", train=False)
