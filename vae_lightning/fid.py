"""Old home of the FID callback, kept because configs and command lines name
``vae_lightning.fid.FID``; new code uses ``vae_lightning.callbacks.FID``."""

from vae_lightning.callbacks.fid import FID
from vae_lightning.evaluation.fid import INCEPTION_HELP, make_fid, rgb

__all__ = ["FID", "INCEPTION_HELP", "make_fid", "rgb"]
