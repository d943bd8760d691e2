"""Every use of a private Lightning, W&B, jsonargparse, torch or scikit-learn attribute, each behind one
small function.

Checked against lightning 2.6.6, wandb 0.31.0, jsonargparse 4.53.0, torch 2.14.1 and scikit-learn 1.9.1.
``tests/test_compat.py`` builds the real objects and fails, naming the attribute, when a release removes one of them;
fix the function here, nowhere else. ``PRIVATE`` lists them for that test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: (owner, attribute) pairs this module relies on; "owner" is what tests/test_compat.py builds
PRIVATE = [
    ("LightningModule", "_trainer"),  # None when the module is not attached (.trainer raises)
    ("Trainer", "_logger_connector"),  # .should_update_logs
    ("Trainer", "_results"),  # the values logged in the current step
    ("Trainer", "_accelerator_connector"),  # .cluster_environment
    ("ModelCheckpoint", "_save_last_checkpoint"),
    ("ModelCheckpoint", "_monitor_candidates"),
    ("ModelCheckpoint", "_last_global_step_saved"),
    ("_CheckpointConnector", "hpc_save_path"),  # a private class of lightning.pytorch
    ("LightningCLI", "_parse_ckpt_path"),  # overridden by VAECLI
    ("LightningCLI", "_get"),
    ("ArgumentParser", "_subcommands_action"),  # jsonargparse: ._name_parser_map
    ("ArgumentParser", "_actions"),  # argparse's; a typed action's ._typehint (jsonargparse)
    ("WandbLogger", "_wandb_init"),
    ("WandbLogger", "_offline"),
    ("WandbLogger", "_experiment"),
    ("wandb.errors.term", "_printed_messages"),  # messages termwarn(repeat=False) has printed
    ("wandb.errors.term", "WARN_STRING"),
    ("torch", "_amp_foreach_non_finite_check_and_unscale_"),  # GradScaler's fused non-finite check
    ("HistGradientBoostingClassifier", "_predictors"),  # a fitted one: its trees, per boosting round
]


# ---- Lightning 2.6.6 ------------------------------------------------------------------------


def attached_trainer(module):
    """The ``Trainer`` a ``LightningModule`` is attached to, or None; ``module.trainer`` raises
    instead when there is none (lightning 2.6.6)."""
    return module._trainer


def should_update_logs(trainer) -> bool:
    """Whether this step is one that ``log_every_n_steps`` writes (lightning 2.6.6)."""
    return trainer._logger_connector.should_update_logs


def logged_values(trainer) -> Iterator[tuple[str, Any]]:
    """(key, result metric) pairs logged in the current step; keys end in ``.<name>``; none outside
    a loop (lightning 2.6.6)."""
    results = trainer._results
    return iter(results.items() if results is not None else ())


def cluster_environment(trainer):
    """The trainer's ``ClusterEnvironment`` (e.g. ``SLURMEnvironment``) (lightning 2.6.6)."""
    return trainer._accelerator_connector.cluster_environment


def last_global_step_saved(callback) -> int:
    """The global step of a ``ModelCheckpoint``'s latest save (lightning 2.6.6)."""
    return callback._last_global_step_saved


def save_last_checkpoint(callback, trainer) -> None:
    """Make a ``ModelCheckpoint`` write its ``last.ckpt`` now (lightning 2.6.6)."""
    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def hpc_save_path(root_dir: str) -> str:
    """``<root_dir>/hpc_ckpt_<n>.ckpt``, the file Lightning resumes a requeued job from (lightning 2.6.6)."""
    from lightning.pytorch.trainer.connectors.checkpoint_connector import _CheckpointConnector

    return _CheckpointConnector.hpc_save_path(root_dir)


def cli_setting(cli, config, key: str, default: Any = None) -> Any:
    """``config[<subcommand>][key]`` (or ``config[key]`` with run=False) of a LightningCLI (lightning 2.6.6)."""
    return cli._get(config, key, default=default)


def subcommand_options(parser, subcommand: str) -> list[str]:
    """Option names of one subcommand of a LightningCLI parser (jsonargparse 4.53.0)."""
    subparser = parser._subcommands_action._name_parser_map[subcommand]
    return [a.dest for a in subparser._actions if a.dest and a.dest != "help"]


def parse_int_first(parser, dests: tuple[str, ...]) -> None:
    """Make the ``Union[float, int]`` options ``dests`` try int first (jsonargparse 4.53.0 tries a
    union's types in the given order, and Lightning 2.6.6 types ``limit_*_batches`` float first):
    else ``1`` arrives as ``1.0``, which Lightning reads as "all batches"."""
    for action in parser._actions:
        if action.dest in dests and hasattr(action, "_typehint"):
            action._typehint = int | float | None


# ---- W&B 0.31.0 (through lightning 2.6.6's WandbLogger) ----------------------------------------


def wandb_init_args(logger) -> dict:
    """The keyword arguments the ``WandbLogger`` will pass to ``wandb.init`` (mutable)."""
    return logger._wandb_init


def wandb_offline(logger) -> bool:
    return logger._offline


def wandb_started(logger) -> bool:
    """Whether the logger's run exists already (``logger.experiment`` would start it)."""
    return logger._experiment is not None


def wandb_skip_warnings(messages) -> None:
    """Make ``wandb.termwarn(message, repeat=False)`` print nothing for these messages: W&B skips
    a message it has printed once (wandb 0.31.0). Imports wandb."""
    from wandb.errors import term

    term._printed_messages.update(f"{term.WARN_STRING} {message}" for message in messages)


def wandb_go_offline(logger) -> None:
    """Forget a failed online start; the next ``logger.experiment`` starts an offline run."""
    logger._offline = True
    wandb_init_args(logger)["mode"] = "offline"
    logger._experiment = None


# ---- torch 2.14.1 -------------------------------------------------------------------------------


def non_finite_check_(grads: list, found_inf, inv_scale) -> None:
    """Multiply ``grads`` (one device and dtype) by ``inv_scale`` in place and set ``found_inf``
    to 1 if any value is not finite: ``GradScaler``'s fused kernel, one pass for the whole list."""
    import torch

    torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)


# ---- scikit-learn 1.9.1 ---------------------------------------------------------------------


def hist_gradient_boosting_splits(model) -> list:
    """The split nodes (numpy records with ``feature_idx`` and ``gain``) of every tree of a fitted
    ``HistGradientBoostingClassifier``, which has no ``feature_importances_`` (scikit-learn 1.9.1)."""
    return [tree.nodes[~tree.nodes["is_leaf"].astype(bool)] for stage in model._predictors for tree in stage]
