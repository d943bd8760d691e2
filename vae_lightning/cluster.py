"""Checks of the trainer's hardware settings against this machine and SLURM, and the W&B run id
of a SLURM job. ``VAECLI`` calls these on the parsed config, before anything is built, so a
mistake costs one line instead of a traceback from a half-started DDP job."""

from __future__ import annotations

import os
import re

import torch

from vae_lightning.errors import UserError


def device_count(devices) -> int | None:
    """How many devices ``trainer.devices`` asks for; None for ``auto`` or ``-1`` (all)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if "," in text:  # "0,1": device ids
        return len([d for d in text.split(",") if d.strip()])
    if re.fullmatch(r"-?\d+", text) and int(text) > 0:
        return int(text)
    return None


def _on_cpu(accelerator) -> bool:
    name = str(accelerator).lower()
    return name == "cpu" or (name == "auto" and not torch.cuda.is_available())


def _slurm_int(name: str) -> int | None:
    """SLURM's per-node counts may read ``2(x3)``; the leading number is the one per node."""
    match = re.match(r"\d+", os.environ.get(name, ""))
    return int(match.group()) if match else None


def in_slurm_job() -> bool:
    """True where Lightning's ``SLURMEnvironment`` takes over: inside ``srun`` of a batch job."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def check_trainer(trainer) -> None:
    """Refuse hardware settings that cannot work here, each with one sentence: 16-bit autocast on
    the CPU, more devices than exist, devices or nodes that differ from the SLURM allocation."""
    accelerator, precision = getattr(trainer, "accelerator", "auto"), str(getattr(trainer, "precision", None))
    cpu = isinstance(accelerator, str) and _on_cpu(accelerator)
    if cpu and precision in ("16", "16-mixed"):
        raise UserError(
            f"trainer.precision={precision} needs a CUDA GPU (float16 autocast); on the CPU use bf16-mixed "
            "(--config configs/trainer/bf16.yaml)."
        )
    n = device_count(getattr(trainer, "devices", "auto"))
    if n is not None and isinstance(accelerator, str):
        if cpu:
            available, what = len(os.sched_getaffinity(0)), "CPU cores (one process per device)"
        elif str(accelerator).lower() in ("gpu", "cuda", "auto"):
            available, what = torch.cuda.device_count(), "CUDA GPUs"
        else:
            available = None
        if available is not None and n > available:
            raise UserError(f"trainer.devices={n} but this machine has {available} {what}; use devices <= {available}.")
    if not in_slurm_job():
        return
    tasks, nodes = _slurm_int("SLURM_NTASKS_PER_NODE"), _slurm_int("SLURM_NNODES")
    if n is not None and tasks is not None and n != tasks:
        raise UserError(
            f"trainer.devices={n} but SLURM started {tasks} task(s) per node (--ntasks-per-node={tasks}); Lightning "
            f"needs one task per device: set --ntasks-per-node={n} in the batch script or trainer.devices={tasks}."
        )
    num_nodes = int(getattr(trainer, "num_nodes", 1) or 1)
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
