"""``vae compare --wandb ENTITY/PROJECT --study NAME``: the runs of one W&B group (a study's
name) as ``compare.Run``s, the same records as from the study's folders.

Needs a W&B login and the network (``wandb.Api()``); not exercised on the project's machines,
where the conversion is tested with a stand-in for the API object and recorded API responses
(``tests/fixtures/wandb_study``). The fields read are the public ``Run`` attributes of
``wandb.apis.public``: ``name``, ``id``, ``state``, ``config``, ``summary`` and
``scan_history(keys=...)``. A study task's run holds its record (``study_command._log_task``):
``study_task`` in the config (entry, grid point, seed, hash) and in the summary (restarts, wall
time of the whole task).
"""

from __future__ import annotations

from typing import Any

from vae_lightning.errors import UserError
from vae_lightning.evaluation.compare import (
    CURVE_KEYS,
    ENTRY_KEY,
    POINT_KEY,
    WANDB_TASK_KEY,
    Run,
    drop_unused,
    flatten,
    point_label,
    study_task,
)

# W&B run states -> the statuses of run records ("preempted" runs are requeued: still running)
STATES = {
    "finished": "finished",
    "running": "running",
    "pending": "running",
    "preempting": "running",
    "preempted": "running",
    "failed": "failed",
    "crashed": "failed",
    "killed": "failed",
}
STEP_KEYS = ("trainer/global_step", "_step")


def convert(api_run: Any) -> Run:
    """One W&B run: its flattened config, summary (``_runtime`` as ``wall_time``, the last global
    step as ``step``), the ``val/elbo`` history against the step and a study task's record, with the
    config keys ``entry`` and ``point`` that the folders' runs get."""
    # not the provenance of an evaluation that continued the run (provenance_test): no setting
    config = {k: v for k, v in dict(api_run.config).items() if not str(k).startswith(("_", "provenance_"))}
    provenance = config.pop("provenance", None)
    raw = dict(api_run.summary)
    summary = {k: v for k, v in raw.items() if not str(k).startswith("_") and k != WANDB_TASK_KEY}
    task, done = None, raw.get(WANDB_TASK_KEY) if isinstance(raw.get(WANDB_TASK_KEY), dict) else {}
    if isinstance(config.get(WANDB_TASK_KEY), dict):
        task = study_task(config.pop(WANDB_TASK_KEY), done.get("restarts"), done.get("wall_time"))
    summary["wall_time"] = raw.get("_runtime")
    summary["step"] = (
        done.get("steps") if task is not None and done.get("steps") is not None else _last_step(api_run, raw)
    )
    summary["status"] = STATES.get(str(api_run.state), "unknown")
    history = []
    for step_key in STEP_KEYS:
        rows = list(api_run.scan_history(keys=[step_key, *CURVE_KEYS]))
        if rows:
            history = [
                {"step": float(r[step_key]), **{k: float(r[k]) for k in CURVE_KEYS if r.get(k) is not None}}
                for r in rows
            ]
            break
    config = drop_unused(flatten(config))  # as from the run folders: a class's unused parameters left out
    if task is not None:
        config[ENTRY_KEY], config[POINT_KEY] = task["entry"], point_label(task["point"])
    name = f"{api_run.name} ({api_run.id})"
    return Run(
        name,
        f"wandb:{api_run.id}",
        summary["status"],
        config,
        summary,
        history,
        provenance if isinstance(provenance, dict) else None,
        task=task,
    )


def _last_step(api_run: Any, summary: dict) -> Any:
    """The largest global step in the history (the summary holds the last one logged: 0 from a test,
    whose Trainer starts at 0). Lightning logs the step from 0, so for a fit this may be one less
    than the optimizer steps a run folder counts; a study task's record has the folder's count."""
    for key in STEP_KEYS:
        steps = [r[key] for r in api_run.scan_history(keys=[key]) if r.get(key) is not None]
        if steps:
            return max(steps)
    return next((summary[k] for k in STEP_KEYS if summary.get(k) is not None), None)


def runs_from_wandb(project: str, group: str, api: Any = None) -> list[Run]:
    """The runs of ``group`` (the study's name) in ``project`` ("entity/project"); ``api`` defaults
    to ``wandb.Api()``."""
    if project.count("/") != 1:
        raise UserError(f"--wandb {project!r}: give ENTITY/PROJECT, e.g. my-team/vae-lightning.")
    if api is None:
        import wandb

        try:
            api = wandb.Api()
        except Exception as err:  # no login or no network: wandb raises its own error types
            raise UserError(
                f"--wandb: cannot reach W&B ({type(err).__name__}); run `wandb login`, or compare the "
                "run folders offline (vae compare --study DIR)."
            ) from None
    runs = [convert(r) for r in api.runs(project, filters={"group": group})]
    if not runs:
        raise UserError(f"--wandb {project} --study {group!r}: no runs in that W&B group; check the study's name.")
    return runs
