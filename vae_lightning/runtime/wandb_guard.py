"""A W&B server that cannot be reached must not hang or kill a run: wait a bounded time, then
log offline with a warning (``wandb sync`` uploads the run later)."""

from __future__ import annotations

import os

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from vae_lightning.runtime import compat

#: seconds to wait for the W&B server before going offline, unless the logger's
#: ``settings: {init_timeout: ...}`` says otherwise
INIT_TIMEOUT_ENV = "VAE_WANDB_INIT_TIMEOUT"
DEFAULT_INIT_TIMEOUT = 30.0


def _online(logger: WandbLogger) -> bool:
    mode = compat.wandb_init_args(logger).get("mode") or os.environ.get("WANDB_MODE", "online")
    return not compat.wandb_offline(logger) and mode not in ("offline", "dryrun", "disabled")


@rank_zero_only
def start_wandb(trainer: Trainer) -> None:
    """Start every online ``WandbLogger``'s run now, with a bounded wait; on failure switch it
    to offline mode with a warning naming the cause."""
    import wandb

    for logger in trainer.loggers:
        if not isinstance(logger, WandbLogger) or compat.wandb_started(logger) or not _online(logger):
            continue
        init = compat.wandb_init_args(logger)
        if init.get("settings") is None:
            timeout = float(os.environ.get(INIT_TIMEOUT_ENV, DEFAULT_INIT_TIMEOUT))
            init["settings"] = wandb.Settings(init_timeout=timeout)
        try:
            logger.experiment  # noqa: B018  (starts the run)
        except Exception as err:  # CommError, UsageError (no API key), timeouts: all mean "not now"
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            rank_zero_warn(
                f"W&B could not start an online run ({reason}); logging offline to "
                f"{init.get('dir') or '.'}/wandb instead. Upload later with `wandb sync <offline-run folder>`."
            )
            try:
                wandb.finish()
            except Exception:
                pass
            compat.wandb_go_offline(logger)
            init.pop("settings", None)
            logger.experiment  # noqa: B018
