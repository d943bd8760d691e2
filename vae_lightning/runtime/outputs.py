"""Output files of ``vae encode`` and ``vae sample``: checked before any work, written whole.

A file is written with ``runtime.atomic.atomic_open`` (a hidden temporary sibling, renamed
when complete); a folder of files is
filled under a hidden temporary name and renamed at the end. A run that fails or is stopped
leaves no file or folder under the name asked for (a killed run may leave a ``.…tmp`` sibling,
which never looks complete).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vae_lightning.errors import UserError


def check_out(flag: str, path: str | Path, suffixes: tuple[str, ...] | None = None, folder: bool = False) -> Path:
    """``path`` as an output of ``flag``: its suffix is one of ``suffixes`` (a file) or it
    names a new or empty folder (``folder``), and its parent folder can be written."""
    path = Path(path).expanduser()
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {str(path)!r} must end in {' or '.join(suffixes)}.")
    if folder and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"{flag} {str(path)!r} exists and is not an empty folder; choose a new folder.")
    from vae_lightning.cli.preflight import check_writable

    check_writable(flag, path.parent)
    return path


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yields a temporary folder beside ``path``; renamed to ``path`` when the block succeeds."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.is_dir():
            path.rmdir()  # empty (check_out refused anything else); rename needs it gone
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def progress(total: int, what: str, unit: str):
    """A tqdm bar on stderr (hidden when stderr is not a terminal, e.g. under SLURM)."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)
