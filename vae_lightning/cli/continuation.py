"""``vae validate|test|predict --ckpt_path X`` continues the run of the fit that wrote X.

The fit leaves ``provenance.json`` beside its checkpoints (``runtime/provenance.py``) with its W&B
run (id, project, group, save_dir) and its CSV/TensorBoard folders. An evaluation of one of those
checkpoints then logs into that W&B run (same id, ``resume: allow``, offline too), so the fit's
config, curves and ``test/*`` sit in one row; CSV and TensorBoard write into the fit's version
folder, in a subfolder named after the command (``version_3/test/metrics.csv``), so the fit's own
``metrics.csv`` is kept and a requeued evaluation rewrites its file instead of adding rows.
``--eval_run separate`` makes a W&B run of its own instead: ``job_type: eval``, the fit's group,
and the fit's run id under ``fit_run_id`` in its config.
"""

from __future__ import annotations

from pathlib import Path

from vae_lightning.runtime import provenance

EVAL_RUN = ("continue", "separate")
FILE_LOGGERS = ("CSVLogger", "TensorBoardLogger")


def fit_record(ckpt_path) -> dict | None:
    """The provenance of the fit that wrote ``ckpt_path`` (None: not a file, or no record)."""
    if not ckpt_path or not Path(str(ckpt_path)).is_file():
        return None
    return provenance.read(Path(ckpt_path).parent)


def _loggers(config) -> list:
    loggers = config.trainer.logger
    return [lg for lg in (loggers if isinstance(loggers, list) else [loggers]) if getattr(lg, "init_args", None)]


def apply(config, subcommand: str) -> None:
    """Point the loggers of an evaluation at its checkpoint's fit (see the module docstring)."""
    record = fit_record(config.get("ckpt_path")) if subcommand in ("validate", "test", "predict") else None
    if record is None:
        return
    mode = config.get("eval_run") or "continue"
    for logger in _loggers(config):
        init, cls = logger.init_args, str(logger.class_path).rsplit(".", 1)[-1]
        if cls == "WandbLogger" and record.get("wandb") and not init.get("id"):
            run = record["wandb"]
            init["group"] = run.get("group")
            if mode == "continue":
                init["id"], init["resume"] = run["id"], "allow"
                init["project"], init["save_dir"] = run.get("project") or init.get("project"), run["save_dir"]
            else:
                init["job_type"] = "eval"
        elif cls in FILE_LOGGERS and cls in (record.get("loggers") or {}):
            fit = record["loggers"][cls]
            version = fit["version"]
            version = f"version_{version}" if isinstance(version, int) else str(version)
            init["save_dir"], init["name"], init["version"] = fit["save_dir"], fit["name"], f"{version}/{subcommand}"
