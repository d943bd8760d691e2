"""``vae compare --wandb ENTITY/PROJECT --group G``: the runs of one W&B group as ``compare.Run``s.

Needs a W&B login and the network (``wandb.Api()``); not exercised on the project's machines,
where only the conversion is tested, with a stand-in for the API object. The fields read are
the public ``Run`` attributes of ``wandb.apis.public``: ``name``, ``id``, ``state``, ``config``,
``summary`` and ``scan_history(keys=...)``.
"""

from __future__ import annotations

from typing import Any

from vae_lightning.errors import UserError
from vae_lightning.evaluation.compare import CURVE_KEYS, Run, drop_unused, flatten

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
    """One W&B run: its flattened config, summary (``_runtime`` as ``wall_time``, the global step
    as ``step``) and the ``val/elbo`` history against the step."""
    config = {k: v for k, v in dict(api_run.config).items() if not str(k).startswith("_")}
    provenance = config.pop("provenance", None)
    summary = {k: v for k, v in dict(api_run.summary).items() if not str(k).startswith("_")}
    raw = dict(api_run.summary)
    summary["wall_time"] = raw.get("_runtime")
    summary["step"] = next((raw[k] for k in STEP_KEYS if raw.get(k) is not None), None)
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
    name = f"{api_run.name} ({api_run.id})"
    return Run(
        name,
        f"wandb:{api_run.id}",
        summary["status"],
        drop_unused(flatten(config)),  # as from the run folders: a class's unused parameters left out
        summary,
        history,
        provenance if isinstance(provenance, dict) else None,
    )


def runs_from_wandb(project: str, group: str, api: Any = None) -> list[Run]:
    """The runs of ``group`` in ``project`` ("entity/project"); ``api`` defaults to ``wandb.Api()``."""
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
        raise UserError(f"--wandb {project} --group {group!r}: no runs in that group; check the group name in W&B.")
    return runs
