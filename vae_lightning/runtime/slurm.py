"""What a run inside a SLURM job needs to know: whether it is in one, its job id, the W&B run id
that every restart of the job shares, and whether the allocation matches the trainer's devices.

The library reads these facts here; the launcher (``vae slurm submit``, ``cli/slurm.py``) renders
the job, and never the reverse. Imports neither torch nor lightning.
"""

from __future__ import annotations

import os
import re

from vae_lightning.errors import UserError


def _slurm_int(name: str) -> int | None:
    """SLURM's per-node counts may read ``2(x3)``; the leading number is the one per node."""
    match = re.match(r"\d+", os.environ.get(name, ""))
    return int(match.group()) if match else None


def in_slurm_job() -> bool:
    """True where Lightning's ``SLURMEnvironment`` takes over: inside ``srun`` of a batch job."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def check_allocation(devices: int | None, num_nodes: int) -> None:
    """Inside a SLURM job, ``trainer.devices`` (None: auto/all) and ``trainer.num_nodes`` must
    match the tasks per node and nodes SLURM started; else one sentence with the fix."""
    if not in_slurm_job():
        return
    tasks, nodes = _slurm_int("SLURM_NTASKS_PER_NODE"), _slurm_int("SLURM_NNODES")
    if devices is not None and tasks is not None and devices != tasks:
        raise UserError(
            f"trainer.devices={devices} but SLURM started {tasks} task(s) per node (--ntasks-per-node={tasks}); "
            f"Lightning needs one task per device: set --ntasks-per-node={devices} in the batch script or "
            f"trainer.devices={tasks}."
        )
    if nodes is not None and num_nodes != nodes:
        raise UserError(
            f"trainer.num_nodes={num_nodes} but the SLURM job has {nodes} node(s) (--nodes={nodes}); make them equal."
        )


def slurm_job_id() -> str | None:
    """``<array job>_<task>`` for an array task, else the job id; None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def slurm_wandb_id() -> str | None:
    """``slurm-<job>`` (``slurm-<array job>_<task>`` in an array): the same W&B run for every
    restart of one SLURM job. None outside SLURM or when W&B chose the id (a sweep agent)."""
    job = slurm_job_id()
    return None if job is None or os.environ.get("WANDB_RUN_ID") else f"slurm-{job}"


def set_wandb_resume(logger_init) -> None:
    """In a SLURM job, give a WandbLogger without an id the job's id and allow resuming it, so a
    requeued job continues its W&B run instead of starting a new one."""
    run_id = slurm_wandb_id()
    if run_id is None or logger_init.get("id") or logger_init.get("version"):
        return
    logger_init["id"] = run_id
    logger_init["resume"] = "allow"
