"""A resumable loader for map-style data sets read from files (image folders, CelebA).

``FileBatchLoader`` keeps ``BatchLoader``'s seeded per-epoch order, DDP sharding and saved
position, and hands the batches of indices to a ``torch.utils.data.DataLoader`` so that worker
processes decode the files. A run resumed mid-epoch from a checkpoint therefore sees the same
images in the same order as a run that never stopped (Lightning saves ``state_dict`` itself).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vae_lightning.data.loader import BatchLoader


class _Batches:
    """The batch sampler the DataLoader iterates: lists of indices, replaced every epoch (the
    sampler is iterated in the main process, so persistent workers see each new epoch)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class FileBatchLoader(BatchLoader):
    """Iterable of batches ``(x, y)`` from ``dataset`` (``dataset[i] -> (x (C, H, W), y)``),
    over ``indices`` of it, in ``BatchLoader``'s order.

    Args:
        dataset: a map-style data set; its items are collated by torch's default collate.
        indices: which items this split uses, (N,) long.
        num_workers: DataLoader worker processes (kept alive across epochs when > 0).
        other arguments: as ``BatchLoader`` (``binarize`` stays ``none``: file data is gray).
    """

    def __init__(
        self,
        dataset: Dataset,
        indices: Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            dataset,
            indices,
            batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
        self._sampler = _Batches()
        # its own generator: a DataLoader iterator otherwise draws its workers' base seed from
        # torch's global RNG, which would shift the training noise after a resume
        self._loader = DataLoader(
            dataset,
            batch_sampler=self._sampler,
            num_workers=num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # as BatchLoader: the body runs at the first next()
        if self._resume is not None:
            (self.epoch, start), self._resume = self._resume, None
        else:
            self.epoch, start = self.epoch + 1, 0
        order = self._order(self.epoch).tolist()
        self._sampler.batches = [
            order[b * self.batch_size : (b + 1) * self.batch_size] for b in range(start, len(self))
        ]
        for b, batch in enumerate(self._loader, start=start):
            self.batch = b + 1
            yield batch
