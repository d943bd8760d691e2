"""``vae study status STUDY_DIR``: one line per task of a study, and the command that reruns exactly
the failed and missing ones.

Reads ``study.json`` and the task folders (no SLURM needed); where ``squeue`` answers, a task of a
submitted array that SLURM still holds shows SLURM's state (pending or running). Imports neither
torch nor lightning.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from vae_lightning.cli.study_folders import FINISHED_FILE, STARTS_FILE, STUDY_FILE, state
from vae_lightning.errors import UserError

RERUN = ("failed", "missing", "preempted")  # what no running job will finish by itself


def _squeue(jobs: list[dict]) -> dict[str, str]:
    """Task hash -> SLURM state (lower case) of the tasks SLURM still holds; {} without squeue."""
    if not jobs or shutil.which("squeue") is None:
        return {}
    ids = ",".join(str(j["id"]) for j in jobs)
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-j", ids, "-o", "%i %T"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = {}
    by_id = {str(j["id"]): j["tasks"] for j in jobs}
    for line in out.stdout.splitlines():
        job, _, slurm_state = line.strip().partition(" ")
        array, _, index = job.partition("_")
        if array in by_id and index.isdigit() and int(index) < len(by_id[array]):
            found[by_id[array][int(index)]] = slurm_state.lower()
    return found


def task_line(folder: Path, queued: str | None) -> dict:
    """State, steps, restarts and wall time (first start to the end, start-up and test included)."""
    if not folder.is_dir():
        return {"state": queued or "missing", "steps": "", "restarts": "", "wall_time_s": ""}
    found = state(folder)
    if queued and found != "finished":
        found = {"configuring": "pending", "completing": "running"}.get(queued, queued)
    summaries = sorted(folder.glob("checkpoints/*/summary.json"), key=lambda p: p.stat().st_mtime)
    steps = json.loads(summaries[-1].read_text()).get("step", "") if summaries else ""
    starts = (folder / STARTS_FILE).read_text().split() if (folder / STARTS_FILE).is_file() else []
    end = None
    if (folder / FINISHED_FILE).is_file():
        end = float((folder / FINISHED_FILE).read_text().split()[0])
    elif found == "running":
        end = time.time()
    elif summaries:
        end = summaries[-1].stat().st_mtime
    wall = f"{end - float(starts[0]):.0f}" if starts and end else ""
    return {"state": found, "steps": steps, "restarts": max(len(starts) - 1, 0) if starts else "", "wall_time_s": wall}


def rerun_command(command: list[str], hashes: list[str]) -> str:
    """The study's own command with ``--only`` the given hashes (no ``--dry-run``)."""
    cut = command.index("--") if "--" in command else len(command)
    head, tail = command[:cut], command[cut:]
    kept, skip = [], False
    for arg in head:
        if skip:
            skip = False
        elif arg == "--only":
            skip = True
        elif not arg.startswith("--only=") and arg != "--dry-run":
            kept.append(arg)
    return shlex.join([*kept, "--only", ",".join(hashes), *tail])


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise UserError("vae study status takes one study folder, e.g. vae study status runs/locatello_mini.")
    root = Path(argv[0])
    record = root / STUDY_FILE
    if not record.is_file():
        raise UserError(f"{str(root)!r} has no {STUDY_FILE}; give a folder made by `vae study run|submit`.")
    study = json.loads(record.read_text())
    queued = _squeue(study.get("jobs", []))
    rows = []
    for task in study["tasks"]:
        point = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in task["point"].items()) or "-"
        line = task_line(root / task["folder"], queued.get(task["hash"]))
        rows.append({"entry": task["entry"], "point": point, "seed": task["seed"], **line, "hash": task["hash"]})
    columns = ["entry", "point", "seed", "state", "steps", "restarts", "wall_time_s", "hash"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())
    counts = {s: sum(r["state"] == s for r in rows) for s in dict.fromkeys(r["state"] for r in rows)}
    print(f"{len(rows)} task{'' if len(rows) == 1 else 's'}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    again = [r["hash"] for r in rows if r["state"] in RERUN]
    if again:
        print("rerun the failed, preempted and missing ones with:")
        print(f"  {rerun_command(study['command'], again)}")
