"""Old home of ``load_model``, kept for scripts that import ``vae_lightning.checkpoints.load_model``;
checkpoint IO lives in ``vae_lightning.runtime.checkpoint``."""

from vae_lightning.runtime.checkpoint import checkpoint_model_class, load_model

check_checkpoint = checkpoint_model_class  # its old name here (a checkpoint's model class)

__all__ = ["check_checkpoint", "checkpoint_model_class", "load_model"]
