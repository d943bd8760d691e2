"""Every Lightning callback of vae-lightning. The computations they report live in
``vae_lightning.evaluation``; ``VAECLI`` registers most of them under their own config keys
(``checkpoint``, ``images``, ``nonfinite``, ``collapse``, ``disentanglement``, ``scores``,
``rng_state``, ``preemption``, ``record``, ``wandb_summaries``); ``ProgressDisplay`` is added to
``trainer.callbacks`` unless the config brings a progress bar; ``FID`` is added with
``--trainer.callbacks+=vae_lightning.callbacks.FID``.

Checkpoints store callback state under the class's qualified name, so these class names are
part of the checkpoint format: do not rename them.
"""

from vae_lightning.callbacks.checkpoint import Checkpoint
from vae_lightning.callbacks.collapse import CollapseMonitor
from vae_lightning.callbacks.disentanglement import Disentanglement
from vae_lightning.callbacks.fid import FID
from vae_lightning.callbacks.images import ImageLogger, log_image, picture_dir
from vae_lightning.callbacks.nonfinite import NonFiniteGuard, NonFiniteLoss
from vae_lightning.callbacks.progress import ProgressDisplay
from vae_lightning.callbacks.resume import RNGState, SLURMPreemption
from vae_lightning.callbacks.run_record import RunRecord
from vae_lightning.callbacks.wandb_summaries import WandbSummaries
from vae_lightning.evaluation.scoring import AnomalyScores  # a BasePredictionWriter; see evaluation/scoring.py

__all__ = [
    "FID",
    "AnomalyScores",
    "Checkpoint",
    "CollapseMonitor",
    "Disentanglement",
    "ImageLogger",
    "NonFiniteGuard",
    "NonFiniteLoss",
    "ProgressDisplay",
    "RNGState",
    "RunRecord",
    "SLURMPreemption",
    "WandbSummaries",
    "log_image",
    "picture_dir",
]
