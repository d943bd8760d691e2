"""Output paths: the one rule that checks them before any work (``check_output``), and folders
written whole.

A file is written with ``runtime.atomic.atomic_open`` (a hidden temporary sibling, renamed
when complete); a folder of files (``vae encode``, ``vae sample``) is
filled under a hidden temporary name and renamed at the end. A run that fails or is stopped
leaves no file or folder under the name asked for (a killed run may leave a ``.…tmp`` sibling,
which never looks complete).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vae_lightning.errors import UserError


def check_output(
    flag: str, path: Any, kind: str = "file", suffixes: tuple[str, ...] | None = None, empty: bool = False
) -> Path | None:
    """The one rule for an output path, run before any data is loaded or model built, by every
    command for every output (``tests/test_output_paths.py`` has a row per flag).

    ``kind`` "file": ``path`` is not a folder and ends in one of ``suffixes`` (when given);
    ``kind`` "dir": with ``empty``, ``path`` is a new or empty folder (a folder that is filled
    under a temporary name and renamed, see ``atomic_folder``). Either way the folder that will
    hold it exists or can be made, and a file can be created there (proved with a temporary
    file; permission bits alone prove nothing to root). Folders made for the proof are removed
    again, so a refused command leaves nothing behind. Returns the path (``~`` expanded; None
    for no path); raises ``UserError`` naming ``flag`` and ``path``."""
    if not path:
        return None
    if "://" in str(path):
        return Path(str(path))  # remote file systems are checked by fsspec when they are used
    target = Path(str(path)).expanduser()
    if kind == "file" and target.is_dir():
        raise UserError(f"{flag} {str(path)!r} is a folder; give a file name.")
    if suffixes is not None and target.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {str(path)!r} must end in {' or '.join(suffixes)}.")
    if empty and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{flag} {str(path)!r} exists and is not an empty folder; choose a new folder.")
    folder = target if kind == "dir" else target.parent
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".vae-write-test-"):
            pass  # created, then removed on closing
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(f"{flag} {str(path)!r} cannot be written ({reason}); choose a path you can write to.") from None
    finally:
        for made_dir in made:  # the command makes them when it writes; a refused one leaves none
            try:
                made_dir.rmdir()
            except OSError:
                break
    return target


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yields a temporary folder beside ``path``; renamed to ``path`` when the block succeeds."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.is_dir():
            path.rmdir()  # empty (check_output refused anything else); rename needs it gone
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def progress(total: int, what: str, unit: str):
    """A tqdm bar on stderr (hidden when stderr is not a terminal, e.g. under SLURM)."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)
