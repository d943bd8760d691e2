"""``VAECLI``: LightningCLI wired for VAEs (imported only when a subcommand runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError, lazy_instance
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from vae_lightning.callbacks import ImageLogger
from vae_lightning.cluster import check_trainer, set_wandb_resume
from vae_lightning.data.base import VAEDataModule
from vae_lightning.data.sprites import SpritesDataModule
from vae_lightning.errors import UserError
from vae_lightning.models import VAE
from vae_lightning.resume import RNGState, SLURMPreemption


def plain_config(parser: LightningArgumentParser, config) -> dict[str, Any]:
    """The resolved config as plain nested dicts/lists/scalars (what W&B's config panel needs)."""
    text = parser.dump(config, skip_none=False, skip_validation=True)
    return yaml.safe_load(text)


def run_dir(trainer: Trainer) -> Path:
    """The directory that belongs to this run alone (W&B run folder, or the logger's version dir)."""
    logger = trainer.logger
    if isinstance(logger, WandbLogger):
        return Path(logger.experiment.dir)
    # not trainer.log_dir: it broadcasts, and only rank zero gets here (a DDP run would hang)
    return Path(getattr(logger, "log_dir", None) or trainer.default_root_dir)


class LogConfig(SaveConfigCallback):
    """Saves the resolved config as ``config.yaml`` in the run's own directory and sends it to
    every logger as plain nested values, so W&B can filter and group runs by any key."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False, "config_filename": "vae_config.yaml"})

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        config = plain_config(self.parser, self.config)
        config.pop("config", None)  # the list of --config paths, not a setting
        for logger in trainer.loggers:
            logger.log_hyperparams(config)
        directory = run_dir(trainer)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / self.config_filename).write_text(yaml.safe_dump(config, sort_keys=False))


class VAECLI(LightningCLI):
    """``vae fit|validate|test|predict``: model and data chosen by ``class_path`` in YAML."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs) -> None:
        super().__init__(
            model_class=VAE,
            datamodule_class=VAEDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=LogConfig,
            auto_configure_optimizers=False,  # optimizer and scheduler live in the model's init args
            seed_everything_default=0,
            trainer_defaults={"default_root_dir": "runs/default"},
            parser_kwargs={"exit_on_error": False},
            args=args,
            run=run,
            **kwargs,
        )

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        try:
            super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        except ArgumentError as err:
            raise UserError(str(err)) from None

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise UserError(_one_line(err)) from None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ImageLogger, "images")
        parser.add_lightning_class_args(RNGState, "rng_state")  # exact resume: noise continues
        parser.add_lightning_class_args(SLURMPreemption, "preemption")  # USR1 on SLURM: save, requeue
        parser.set_defaults(
            {
                "model": lazy_instance(VAE),
                "data": lazy_instance(SpritesDataModule),
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{step}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        # nets are sized from the data, so the image shape is never repeated in a config
        parser.link_arguments("data.image_shape", "model.init_args.image_shape", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False: no subcommand
        check_trainer(config.trainer)  # devices, precision and SLURM tasks that cannot work: one line
        root = config.trainer.default_root_dir
        # one stable checkpoint folder per run name, so `--ckpt_path last` finds the last run
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = os.path.join(root, "checkpoints")
        loggers = config.trainer.logger
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init = getattr(logger, "init_args", None)
            if init is not None and init.get("save_dir") in (None, ".", ""):
                init["save_dir"] = root  # loggers write beside the checkpoints unless told otherwise
            if init is not None and "WandbLogger" in str(getattr(logger, "class_path", "")):
                set_wandb_resume(init)  # a requeued SLURM job continues its W&B run

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as err:
            raise UserError(_one_line(err)) from None


def _one_line(err: Exception) -> str:
    """jsonargparse nests the cause in a multi-line message; keep the most specific line."""
    lines = [line.strip(" -") for line in str(err).splitlines() if line.strip(" -")]
    return lines[-1] if lines else repr(err)
