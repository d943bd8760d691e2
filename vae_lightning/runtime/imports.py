"""The one dotted-path importer: ``locate("vae_lightning.models.VAE")`` -> the class, or None."""

from __future__ import annotations

import pydoc
from typing import Any


def locate(dotted: str) -> Any | None:
    """The object named by a full import path (module attributes included), or None when it
    cannot be imported: a missing module or name, or a module that fails while importing."""
    if not dotted or "." not in str(dotted):
        return None  # pydoc.locate("") is the builtins module
    try:
        return pydoc.locate(str(dotted))
    except pydoc.ErrorDuringImport:
        return None
