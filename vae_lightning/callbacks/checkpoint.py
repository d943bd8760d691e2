"""``Checkpoint``: Lightning's ``ModelCheckpoint`` with a final ``last.ckpt``."""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from typing_extensions import override

from vae_lightning.runtime import compat


class Checkpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint that always leaves the final state in last.ckpt.

    Lightning's ``ModelCheckpoint`` that also writes ``last.ckpt`` when training ends between
    two validations (e.g. on ``max_steps``), so ``last.ckpt`` is always the final state."""

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and trainer.global_step != compat.last_global_step_saved(self):
            compat.save_last_checkpoint(self, trainer)
