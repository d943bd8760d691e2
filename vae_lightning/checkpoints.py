"""Old home of ``load_model``, kept for scripts that import ``vae_lightning.checkpoints.load_model``;
checkpoint IO lives in ``vae_lightning.runtime.checkpoint``."""

from vae_lightning.runtime.checkpoint import checkpoint_model_class, load_model

__all__ = ["checkpoint_model_class", "load_model"]
