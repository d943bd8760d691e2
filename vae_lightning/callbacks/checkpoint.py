"""``Checkpoint``: Lightning's ``ModelCheckpoint`` with a final ``last.ckpt``."""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
from typing_extensions import override

from vae_lightning.runtime import compat


def _finishing(trainer: Trainer) -> bool:
    """True at the end of the fit's last epoch: max_steps or max_epochs reached, or a stop asked for."""
    max_epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
    return (
        trainer.should_stop
        or (trainer.max_steps >= 0 and trainer.global_step >= trainer.max_steps)
        or (max_epochs is not None and trainer.current_epoch + 1 >= max_epochs)
    )


class Checkpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint that always leaves the final state in last.ckpt.

    Lightning's ``ModelCheckpoint`` that also writes ``last.ckpt`` when training ends between
    two validations (e.g. on ``max_steps``), so ``last.ckpt`` is always the final state. Under
    weight averaging (``EMAWeightAveraging``), whose ``on_train_end`` copies the average over the
    weights before this callback's runs, that final save still holds the raw weights beside the
    average (``current_model_state``), so a finished fit can be continued exactly."""

    _raw: dict | None = None  # the raw weights at the end of the last epoch, under weight averaging

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if _finishing(trainer) and any(isinstance(c, WeightAveraging) for c in trainer.callbacks):
            self._raw = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        raw, self._raw = self._raw, None
        if not self.save_last or trainer.global_step == compat.last_global_step_saved(self):
            return
        if raw is None:
            compat.save_last_checkpoint(self, trainer)
            return
        averaged = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        pl_module.load_state_dict(raw)  # the averaging callback saves the average itself as state_dict
        try:
            compat.save_last_checkpoint(self, trainer)
        finally:
            pl_module.load_state_dict(averaged)
