"""Finished work is never dropped for a bad output path: when writing a result fails at the very
end (a full disk, a folder removed mid-run), it goes to a fallback file in the run folder and
the user is told where, in one line."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from vae_lightning.errors import UserError


def fallback_path(path: Path, folder: str | Path) -> Path:
    """``<folder>/<stem>.unsaved-<date>-<time><suffix>``: a name no earlier result has."""
    return Path(folder) / f"{path.stem}.unsaved-{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}"


def write_or_keep(write: Callable[[Path], None], path: str | Path, flag: str, folder: str | Path) -> Path:
    """``write(path)``; if that raises ``OSError``, ``write`` the same result to a fallback file in
    ``folder`` and raise a ``UserError`` that names ``flag``, ``path`` and where the result is."""
    path = Path(path)
    try:
        write(path)
        return path
    except OSError as err:
        reason = err.strerror or type(err).__name__
    spare = fallback_path(path, folder)
    try:
        write(spare)
    except OSError as err:
        raise UserError(
            f"{flag} {str(path)!r} could not be written ({reason}), nor the fallback {str(spare)!r} "
            f"({err.strerror or type(err).__name__}); free disk space and run the command again."
        ) from None
    raise UserError(f"{flag} {str(path)!r} could not be written ({reason}); the result is kept in {str(spare)!r}.")
