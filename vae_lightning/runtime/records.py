"""Reading and writing the run records (``history.csv``, ``summary.json``) without torch, so that
``vae compare`` starts at once. ``vae_lightning.callbacks.RunRecord`` writes them during a run."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from vae_lightning.runtime.atomic import atomic_open

HISTORY, SUMMARY = "history.csv", "summary.json"


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically (``runtime.atomic``): a reader, or a crash, never
    sees half a file."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def read_summary(folder: Path) -> dict[str, Any]:
    """The folder's ``summary.json`` as a dict ({} when absent or unreadable)."""
    try:
        return json.loads((Path(folder) / SUMMARY).read_text())
    except (OSError, ValueError):
        return {}


def read_history(folder: Path) -> list[dict[str, float]]:
    """The rows of the folder's ``history.csv`` as dicts of floats (empty cells left out)."""
    try:
        text = (Path(folder) / HISTORY).read_text()
    except OSError:
        return []
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        try:
            rows.append({k: float(v) for k, v in row.items() if k and v not in ("", None)})
        except ValueError:  # a hand-edited or foreign file: skip the row, keep the rest
            continue
    return rows


def write_summary(folder: Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json`` into ``folder`` atomically (non-finite numbers as null)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
    write_atomic(Path(folder) / SUMMARY, json.dumps(clean, indent=1, sort_keys=False) + "\n")


def write_history(folder: Path, rows: list[dict[str, float]]) -> None:
    """Write ``history.csv`` into ``folder`` atomically: ``step``, ``wall_time``, then every
    metric in order of first appearance; a metric not logged at a row's step is an empty cell."""
    columns = ["step", "wall_time"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (int(v) if k == "step" else v) for k, v in row.items()})
    write_atomic(Path(folder) / HISTORY, out.getvalue())
