"""Nets too large for this machine are refused before their weights exist: a huge latent_dim or
hidden width would otherwise get the process killed for memory while the model is built (no
error, no line). ``WeightBudget`` counts the bytes the tensor factories are asked for inside it,
which is cheap (no meta build) and sees every net, whatever its layers."""

from __future__ import annotations

import math
import os

import torch
from torch.overrides import TorchFunctionMode
from typing_extensions import override

#: the factories nn layers make their weights with (``nn.Linear``, ``nn.Conv2d``: torch.empty)
_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint}


def available_memory() -> int | None:
    """Bytes this machine can still give a process (``MemAvailable``, which counts the page cache
    as free), else its physical memory; None where neither can be read. A cgroup's limit (a SLURM
    job's ``--mem``) is not read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


class TooLarge(Exception):
    """Raised by ``WeightBudget`` before the factory call that would pass its budget."""

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


class WeightBudget(TorchFunctionMode):
    """Inside it, the tensors made by factory functions may total at most ``budget`` bytes;
    ``TooLarge`` (with the bytes asked for so far) comes before the allocation that passes it."""

    def __init__(self, budget: int | None) -> None:
        super().__init__()
        self.budget, self.total = budget, 0

    @override
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.budget is not None and func in _FACTORIES and "meta" not in str(kwargs.get("device")):
            n = _numel(func, args, kwargs)
            dtype = kwargs.get("dtype") or torch.get_default_dtype()
            self.total += n * dtype.itemsize
            if self.total > self.budget:
                raise TooLarge(self.total)
        return func(*args, **kwargs)


def _numel(func, args: tuple, kwargs: dict) -> int:
    """The element count a factory call asks for: ``empty(3, 4)``, ``empty((3, 4))``, ``size=``;
    ``randint(low, high, size)`` takes its size last. 0 when the call is spelled otherwise."""
    size = kwargs.get("size")
    if size is None and func is torch.randint:
        size = next((a for a in args if isinstance(a, (tuple, list, torch.Size))), ())
    elif size is None:
        size = args[0] if args and isinstance(args[0], (tuple, list, torch.Size)) else args
    dims = [d for d in size if isinstance(d, int)] if isinstance(size, (tuple, list, torch.Size)) else []
    return math.prod(dims) if dims and len(dims) == len(size) and all(d >= 0 for d in dims) else 0


def gigabytes(n: int) -> str:
    """``204.8 GB`` (``1.6 TB`` from a thousand GB on, ``3.1 MB`` below one GB)."""
    return f"{n / 1e12:.1f} TB" if n >= 1e12 else f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"
