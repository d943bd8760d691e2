"""What a study task's folder holds, read without SLURM: its marker files and its state (one home
for `vae study` and `vae study status`, so that neither imports the other)."""

from __future__ import annotations

import json
from pathlib import Path

FINISHED_FILE = "task.done"  # written when the fit (and its test) ended without a preemption
STARTS_FILE = "starts"  # one line (unix time) per start of the task: restarts and wall time
STUDY_FILE = "study.json"


def state(folder: Path) -> str:
    """finished | preempted | failed | running | pending, from the files of a task folder alone: a
    SLURM checkpoint (``hpc_ckpt_*``) newer than the fit's last record means it stopped there."""
    if (folder / FINISHED_FILE).is_file():
        return "finished"
    summaries = sorted(folder.glob("checkpoints/*/summary.json"), key=lambda p: p.stat().st_mtime)
    hpc = max((p.stat().st_mtime for p in folder.glob("hpc_ckpt_*.ckpt")), default=None)
    last = summaries[-1].stat().st_mtime if summaries else None
    if hpc is not None and (last is None or hpc >= last):
        return "preempted"
    if not summaries:
        return "pending"
    status = json.loads(summaries[-1].read_text()).get("status")
    if status == "failed":
        return "failed"
    return "preempted" if status == "preempted" else "running"
