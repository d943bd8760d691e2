"""``VAECLI``: LightningCLI wired for VAEs (imported only when a subcommand runs)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError, lazy_instance
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from vae_lightning.callbacks import Checkpoint, ImageLogger
from vae_lightning.data.base import VAEDataModule
from vae_lightning.data.sprites import SpritesDataModule
from vae_lightning.errors import UserError
from vae_lightning.models import VAE

# Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 (so that checking for a GPU does not
# break forked workers), which makes every torch.cuda.is_available() load NVML anew: ~0.1 ms,
# paid by Adam at every step. With no GPU there is nothing to protect; use torch's own check.
if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1":
    import torch

    if torch.cuda.device_count() == 0:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


def plain_config(parser: LightningArgumentParser, config) -> dict[str, Any]:
    """The resolved config as plain nested dicts/lists/scalars (what W&B's config panel needs)."""
    text = parser.dump(config, skip_none=False, skip_validation=True)
    return yaml.safe_load(text)


def run_dir(trainer: Trainer) -> Path:
    """The directory that belongs to this run alone (W&B run folder, or the logger's version dir)."""
    logger = trainer.logger
    if isinstance(logger, WandbLogger):
        return Path(logger.experiment.dir)
    return Path(trainer.log_dir or trainer.default_root_dir)


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
        parser.add_lightning_class_args(Checkpoint, "checkpoint")
        parser.add_lightning_class_args(ImageLogger, "images")
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

    @property
    def _run_config(self):
        """This run's config: under the subcommand's key, or the root when run=False."""
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        config = self._run_config
        root = config.trainer.default_root_dir
        # one stable checkpoint folder per run name, so `--ckpt_path last` finds the last run
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = os.path.join(root, "checkpoints")
        loggers = config.trainer.logger
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init = getattr(logger, "init_args", None)
            if init is not None and init.get("save_dir") in (None, ".", ""):
                init["save_dir"] = root  # loggers write beside the checkpoints unless told otherwise

    def instantiate_classes(self) -> None:
        given = self._run_config.model.init_args.get("image_shape")
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as err:
            raise UserError(_one_line(err)) from None
        data_shape = tuple(self.datamodule.image_shape)
        if given is not None and tuple(given) != data_shape:
            raise UserError(
                f"model.init_args.image_shape is {tuple(given)} but {type(self.datamodule).__name__} yields "
                f"{data_shape} images; remove image_shape (vae takes it from the data) or use matching data."
            )


_NOISE = (
    "Does not validate against any of the Union", "Subtypes:", "Errors:", "Given value",
    "Expected a NoneType", "Problem with given class_path", "Validation failed",
)


def _one_line(err: Exception) -> str:
    """jsonargparse reports a nested tree (union subtypes, given values); keep the key path and
    the innermost message, e.g. 'model.init_args.latent_dim: Expected a int. Got value: abc'."""
    text = re.sub(r"<class '(?:[\w]+\.)*([\w]+)'>", r"\1", str(err))
    keys = re.findall(r'Parser key "([^"]+)"', text)
    text = text.replace("Expected a int", "Expected an int")
    lines = [re.sub(r'^Parser key "[^"]+":', "", line.strip().lstrip("-").strip()).strip() for line in text.splitlines()]
    messages = [line for line in lines if line and not line.startswith(_NOISE)]
    message = messages[0] if messages else (lines[0] if lines else repr(err))
    return f"{'.init_args.'.join(keys)}: {message}" if keys else message
