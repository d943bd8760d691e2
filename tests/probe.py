"""Test-only callbacks, reachable from a `vae` subprocess as `tests.probe.<Name>` (PYTHONPATH=repo)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

from vae_lightning.data.sprites import factors_to_index


class RecordIndices(Callback):
    """Writes the sprite indices each rank saw in the first training epoch and in testing to
    ``<out>/{train,test}_rank<r>.pt``, and rank zero's test metrics to ``<out>/test_metrics.json``."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.train: list = []
        self.test: list = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 0:
            self.train.append(factors_to_index(batch[1].cpu()))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            torch.save(torch.cat(self.train), self.out / f"train_rank{trainer.global_rank}.pt")

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.test.append(factors_to_index(batch[1].cpu()))

    def on_test_end(self, trainer, pl_module) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        torch.save(torch.cat(self.test), self.out / f"test_rank{trainer.global_rank}.pt")
        if trainer.is_global_zero:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            (self.out / "test_metrics.json").write_text(json.dumps(metrics))


class Progress(Callback):
    """Writes the global step to ``<out>`` after every step and sleeps ``delay`` seconds (in the
    first start of a SLURM job only), so a test can send a signal while the run is surely
    mid-training."""

    def __init__(self, out: str, delay: float = 0.0) -> None:
        self.out, self.delay = Path(out), delay

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero:  # a relative path lies in the run's folder (one per array task)
            out = self.out if self.out.is_absolute() else Path(trainer.default_root_dir) / self.out
            out.write_text(str(trainer.global_step))
        if os.environ.get("SLURM_RESTART_COUNT", "0") == "0":
            time.sleep(self.delay)


class TestProgress(Callback):
    """Writes the number of test batches done to ``<default_root_dir>/<out>`` and sleeps ``delay``
    seconds after each (in the first start of a SLURM job only), so a test can signal a job mid-test."""

    def __init__(self, out: str, delay: float = 0.0) -> None:
        self.out, self.delay = Path(out), delay

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.is_global_zero:
            (Path(trainer.default_root_dir) / self.out).write_text(str(batch_idx + 1))
        if os.environ.get("SLURM_RESTART_COUNT", "0") == "0":
            time.sleep(self.delay)


class CrashAt(Callback):
    """Rank ``rank`` raises at global step ``step``, after writing the time to ``<default_root_dir>/crashed``
    (a test then bounds how long the other ranks live on)."""

    def __init__(self, rank: int, step: int) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            (Path(trainer.default_root_dir) / "crashed").write_text(str(time.time()))
            raise RuntimeError(f"probe: rank {self.rank} crashes at step {self.step}")
