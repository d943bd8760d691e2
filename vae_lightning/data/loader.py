"""A batch loader for data held in memory (or rendered on demand).

Instead of ``Dataset.__getitem__`` per example plus ``collate``, a source is indexed with a
whole batch of indices at once (``source[idx] -> (x, y)``), which is many times faster for
small images. The loader shuffles with a seeded permutation per epoch, shards across DDP
ranks like ``DistributedSampler``, binarizes dynamically with a seed per batch, and saves its
position (``state_dict``) so Lightning can resume it mid-epoch to the same next batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
from torch import Tensor


class Source(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, C, H, W) float in [0, 1] and targets (B, ...) for indices (B,)."""
        ...


class TensorSource:
    """Images held as a uint8 tensor (N, C, H, W) with targets (N, ...)."""

    def __init__(self, images: Tensor, targets: Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"TensorSource needs uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}.")
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> TensorSource:
        """This source with its tensors on ``device`` (copied once; uint8, so MNIST is 47 MB)."""
        return (
            self
            if torch.device(device) == self.device
            else TensorSource(self.images.to(device), self.targets.to(device))
        )

    def __getitem__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        # index_select rather than images[idx] (advanced indexing): faster for a batch of rows (docs/benchmarks.md)
        return self.images.index_select(0, idx).float().div_(255), self.targets.index_select(0, idx)


def _seeded(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    seed = 0
    for k in keys:  # a simple mix of the keys; different keys give unrelated streams
        seed = (seed * 1_000_003 + int(k) + 1) % (2**63 - 1)
    return g.manual_seed(seed)


class BatchLoader:
    """Iterable of batches ``(x, y)`` over ``indices`` of ``source``.

    Args:
        source: indexable by a tensor of indices, see ``Source``.
        indices: which examples of the source this split uses, (N,) long.
        batch_size: examples per batch (per rank under DDP).
        shuffle: draw a new seeded permutation every epoch.
        drop_last: drop the last incomplete batch.
        seed: seed of the permutations and of dynamic binarization.
        binarize: ``dynamic`` draws x ~ Bernoulli(x) anew for every batch; ``none`` leaves x.
        rank, world_size: this process's share under DDP (every rank sees N / world_size).
    """

    def __init__(
        self,
        source: Source,
        indices: Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        binarize: str = "none",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.source, self.indices = source, indices
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.binarize, self.rank, self.world_size = binarize, rank, world_size
        self.epoch, self.batch = -1, 0  # epoch in progress and batches yielded in it
        self._resume: tuple[int, int] | None = None

    def _per_rank(self) -> int:
        n = len(self.indices)
        if self.world_size == 1:
            return n
        # like DistributedSampler: training pads to equal shares, evaluation splits exactly
        return -(-n // self.world_size) if self.shuffle else len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        n = self._per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self, epoch: int) -> Tensor:
        order = self.indices
        if self.shuffle:
            order = order[torch.randperm(len(order), generator=_seeded(self.seed, epoch))]
        if self.world_size > 1:
            if self.shuffle:
                total = self._per_rank() * self.world_size
                order = torch.cat([order, order[: total - len(order)]])
            order = order[self.rank :: self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # The body runs at the first next(): an iterator Lightning creates and drops unused
        # does not count as an epoch.
        if self._resume is not None:
            (self.epoch, start), self._resume = self._resume, None
        else:
            self.epoch, start = self.epoch + 1, 0
        order = self._order(self.epoch)
        device = getattr(self.source, "device", None)
        if device is not None:  # a source on the GPU is indexed there, with no copy per batch
            order = order.to(device)
        for b in range(start, len(self)):
            x, y = self.source[order[b * self.batch_size : (b + 1) * self.batch_size]]
            if self.binarize == "dynamic":
                # x ~ Bernoulli(x) as one uniform draw and a compare: faster than torch.bernoulli
                # on CPUs (docs/benchmarks.md)
                g = _seeded(self.seed, self.epoch, b, self.rank, device=x.device)
                x = torch.rand(x.shape, generator=g, device=x.device).lt_(x).to(x.dtype)
            self.batch = b + 1
            yield x, y

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["batch"] >= len(self):  # saved at the end of an epoch: start the next one
            self.epoch, self.batch, self._resume = state["epoch"], 0, None
        else:
            self._resume = (state["epoch"], state["batch"])
