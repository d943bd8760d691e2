"""Loading a trained model from a checkpoint, with one clear sentence for each way it can fail."""

from __future__ import annotations

import importlib
from pathlib import Path

from vae_lightning.errors import UserError


def _model_class(class_path: str, path: Path):
    from vae_lightning.models import VAE

    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        raise UserError(f"checkpoint {str(path)!r} needs the model class {class_path!r}, which cannot be imported.") from None
    if not (isinstance(cls, type) and issubclass(cls, VAE)):
        raise UserError(f"checkpoint {str(path)!r} holds a {class_path!r}, not a vae_lightning VAE model; pass a checkpoint written by `vae fit`.")
    return cls


def check_checkpoint(path: str | Path) -> type:
    """The model class of a checkpoint written by ``vae fit``; raises ``UserError`` when the
    file is missing, truncated or not a checkpoint, or holds another model class."""
    from vae_lightning.checkpoint_io import read_checkpoint

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist; pass the path of a .ckpt file written by `vae fit`.")
    hparams = read_checkpoint(str(path)).get("hyper_parameters") or {}
    return _model_class(hparams.get("_class_path", "vae_lightning.models.VAE"), path)


def load_model(path: str | Path, map_location: str = "cpu"):
    """The ``VAE`` (or subclass) saved in a checkpoint written by ``vae fit``, in eval mode.
    Raises ``UserError`` for the cases of ``check_checkpoint`` and for weights that do not fit."""
    import warnings

    path = Path(path)
    cls = check_checkpoint(path)
    try:
        with warnings.catch_warnings():  # Lightning's advice on save_hyperparameters is for developers
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`.*")
            model = cls.load_from_checkpoint(path, map_location=map_location)
    except Exception as err:  # wrong keys or shapes: a checkpoint of another model
        raise UserError(f"checkpoint {str(path)!r} does not fit {cls.__name__} ({type(err).__name__}: {str(err).splitlines()[0][:200]}).") from None
    return model.eval()
