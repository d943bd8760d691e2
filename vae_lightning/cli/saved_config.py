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
    from vae_lightning.runtime.checkpoint import check_torch_file

    check_torch_file(ckpt)  # a YAML given as the checkpoint is said as such, not as a missing config
    saved = Path(ckpt).parent / SAVED_CONFIG
    if saved.is_file():
        return [argv[0], "--config", str(saved), *argv[1:]]
    if flag_value(argv, "--config") is None:
        raise UserError(
            f"checkpoint {ckpt!r} has no {SAVED_CONFIG} beside it to say which model and data it needs; "
            f"pass the run's config: vae {argv[0]} --config <its YAML> --ckpt_path {ckpt}."
        )
    return argv


def read_config_file(name: str) -> dict:
    """A ``--config`` YAML file as a dict (empty file: ``{}``); ``UserError`` naming the file when it
    is missing, not text, not valid YAML, or not a mapping of keys."""
    import yaml

    try:
        text = Path(name).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"config file {name!r} is not a text (UTF-8) file; pass the run's YAML.") from None
    except IsADirectoryError:
        raise UserError(f"config file {name!r} is a folder; pass a YAML file.") from None
    except OSError:
        raise UserError(f"config file {name!r} does not exist or cannot be read; check the path.") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"config file {name!r} is not valid YAML: {problem}{where}.") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise UserError(
            f"config file {name!r} must hold a mapping of keys (trainer:, model:, data:, ...), "
            f"not a {type(loaded).__name__}."
        )
    return loaded or {}


def config_files(argv: list[str]) -> list[str]:
    """The files given to ``--config`` in ``argv`` (``--config X`` and ``--config=X``)."""
    files = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    return files + [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
