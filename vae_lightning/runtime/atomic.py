"""One way to write a file so that readers see the old file or the whole new one, never half.

The bytes go to a hidden temporary file in the target's folder, are fsynced, and the file is
renamed over the target (``os.replace`` is atomic on POSIX). On any error the temporary file is
removed and the error propagates; the previous file stays as it was. Used for checkpoints,
PNGs and CSVs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some file systems do not open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` that only replaces ``path`` when the ``with`` block ends without an
    error; ``mode`` is ``"wb"`` or ``"w"`` (kwargs such as ``newline`` go to ``open``)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files (mode 'w' or 'wb'), got mode {mode!r}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
