"""``vae validate|test|predict --ckpt_path X`` with nothing else: the run's own config comes first.

``vae fit`` saves the resolved config as ``vae_config.yaml`` beside its checkpoints (and in the
logger's run folder). An evaluation given a checkpoint file reads that file as its first
``--config``, so the model class, its arguments and the data are the run's; any ``--config`` or
flag on the command line comes later and overrides them (another data set, another
``iw_samples``).
"""

from __future__ import annotations

from pathlib import Path

from vae_lightning.errors import UserError

SAVED_CONFIG = "vae_config.yaml"
EVALUATIONS = ("validate", "test", "predict")


def flag_value(argv: list[str], flag: str) -> str | None:
    """The last value given to ``flag`` in ``argv`` (``--flag v`` or ``--flag=v``), else None."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def with_saved_config(argv: list[str]) -> list[str]:
    """``argv`` (subcommand first) with ``--config <checkpoint folder>/vae_config.yaml`` put right
    after an evaluation subcommand whose ``--ckpt_path`` is a file; unchanged otherwise. Refuses
    a checkpoint without a saved config when no ``--config`` says what to build."""
    if not argv or argv[0] not in EVALUATIONS:
        return argv
    ckpt = flag_value(argv, "--ckpt_path")
    if ckpt is None or ckpt in ("last", "best", "hpc") or "://" in ckpt or not Path(ckpt).is_file():
        return argv  # no file to read from; resolve_ckpt_path reports a missing one
    saved = Path(ckpt).parent / SAVED_CONFIG
    if saved.is_file():
        return [argv[0], "--config", str(saved), *argv[1:]]
    if flag_value(argv, "--config") is None:
        raise UserError(
            f"checkpoint {ckpt!r} has no {SAVED_CONFIG} beside it to say which model and data it needs; "
            f"pass the run's config: vae {argv[0]} --config <its YAML> --ckpt_path {ckpt}."
        )
    return argv
