"""``VAECLI``: LightningCLI wired for VAEs (imported only when a subcommand runs), and ``LogConfig``,
its ``SaveConfigCallback`` (it needs the parser, so it lives with the CLI, not in callbacks/)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError, DefaultHelpFormatter, lazy_instance
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar, WeightAveraging
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from typing_extensions import override

from vae_lightning.callbacks import (
    AnomalyScores,
    Checkpoint,
    CollapseMonitor,
    Disentanglement,
    ImageLogger,
    NonFiniteGuard,
    ProgressDisplay,
    RNGState,
    RunRecord,
    SLURMPreemption,
    WandbSummaries,
)
from vae_lightning.cli import console, continuation, explain, preflight
from vae_lightning.cli.console import plain
from vae_lightning.cli.saved_config import (
    SAVED_CONFIG,
    config_files,
    flag_value,
    read_config_file,
    with_saved_config,
)
from vae_lightning.data.base import VAEDataModule
from vae_lightning.data.sprites import SpritesDataModule
from vae_lightning.errors import UserError
from vae_lightning.models import VAE
from vae_lightning.runtime import compat, provenance
from vae_lightning.runtime.atomic import atomic_open
from vae_lightning.runtime.checkpoint import AtomicCheckpointIO, check_fits_model, resolve_ckpt_path, run_checkpoint_dir
from vae_lightning.runtime.outputs import check_output
from vae_lightning.runtime.slurm import set_wandb_resume
from vae_lightning.runtime.wandb_guard import start_wandb


def drop_nvml_cuda_check() -> None:
    """Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 (so that checking for a GPU does not
    break forked workers), which makes every torch.cuda.is_available() load NVML anew, a cost Adam
    pays at every step (docs/benchmarks.md). With no GPU there is nothing to protect; torch's own
    check is used instead. Called when a run starts, not at import."""
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1":
        import torch

        if torch.cuda.device_count() == 0:
            del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


def plain_config(parser: LightningArgumentParser, config) -> dict[str, Any]:
    """The resolved config as plain nested dicts/lists/scalars (what W&B's config panel needs)."""
    text = parser.dump(config, skip_none=False, skip_validation=True)
    return yaml.safe_load(text)


def run_dir(trainer: Trainer, stage: str = "fit") -> Path | None:
    """The directory that belongs to this run alone (W&B run folder, or the logger's version dir);
    None for an evaluation that logs nowhere, since the only folders it knows are its fit's."""
    logger = trainer.logger
    if isinstance(logger, WandbLogger):
        return Path(logger.experiment.dir)
    # not trainer.log_dir: it broadcasts, and this runs on rank zero only (a DDP hang without a logger)
    log_dir = getattr(logger, "log_dir", None) if logger is not None else None
    if log_dir is not None:
        return Path(log_dir)
    if stage != "fit":
        return None  # writing there would overwrite the fit's vae_config.yaml, which evaluations read
    if getattr(trainer.checkpoint_callback, "dirpath", None):
        return Path(trainer.checkpoint_callback.dirpath)  # the run's own folder when nothing logs
    return Path(trainer.default_root_dir)


class LogConfig(SaveConfigCallback):
    """Saves the resolved config as ``vae_config.yaml`` in the run's own directory and sends it to
    every logger as plain nested values, so W&B can filter and group runs by any key; with it the
    run's provenance (``runtime/provenance.py``), also written as ``provenance.json``. A fit
    writes both into its checkpoint folder too. An evaluation that continues its fit's W&B run
    adds only ``provenance_<stage>`` there, so the fit's config stays what the run shows."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False, "config_filename": SAVED_CONFIG})

    @override
    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        config = plain_config(self.parser, self.config)
        config.pop("config", None)  # the list of --config paths, not a setting
        prov = provenance.record(config, trainer, trainer.datamodule)
        prov.update(wandb=_wandb_run(trainer), loggers=_file_loggers(trainer))
        fit = continuation.fit_record(config.get("ckpt_path")) if stage != "fit" else None
        for logger in trainer.loggers:
            logger.log_hyperparams(_hyperparams(logger, config, prov, stage, fit))
        folders = [run_dir(trainer, stage)]
        if stage == "fit" and getattr(trainer.checkpoint_callback, "dirpath", None):
            folders.append(Path(trainer.checkpoint_callback.dirpath))
        for directory in dict.fromkeys(f for f in folders if f is not None):
            directory.mkdir(parents=True, exist_ok=True)
            with atomic_open(directory / self.config_filename, "w") as fh:
                fh.write(yaml.safe_dump(config, sort_keys=False))
            provenance.write(directory, prov)


def _hyperparams(logger, config: dict, prov: dict, stage: str, fit: dict | None) -> dict:
    if not isinstance(logger, WandbLogger):
        return {**config, "provenance": prov}
    if stage != "fit" and compat.wandb_init_args(logger).get("resume"):
        return {f"provenance_{getattr(stage, 'value', stage)}": prov}  # the fit's own run: keep its config
    extra = {"fit_run_id": fit["wandb"]["id"]} if fit and fit.get("wandb") else {}
    return {**config, "provenance": prov, **extra}


def _wandb_run(trainer: Trainer) -> dict | None:
    """The W&B run of this process (id, project, group, save_dir), for evaluations to continue."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            return {
                "id": run.id,
                "project": getattr(run, "project", None),
                "group": run.group or None,
                "save_dir": str(Path(logger.save_dir or ".").resolve()),
            }
    return None


def _file_loggers(trainer: Trainer) -> dict:
    """Where each CSV/TensorBoard logger writes: an evaluation writes below the same folder."""
    return {
        type(lg).__name__: {"save_dir": str(Path(lg.save_dir).resolve()), "name": lg.name, "version": lg.version}
        for lg in trainer.loggers
        if type(lg).__name__ in continuation.FILE_LOGGERS
    }


class PlainHelpFormatter(DefaultHelpFormatter):
    """``--help`` as plain text: docstrings' reStructuredText markup (``x``) is dropped."""

    def format_help(self) -> str:
        return plain(super().format_help())


class PlainArgumentParser(LightningArgumentParser):
    """Every parser of ``vae``, the ones jsonargparse makes for ``--model.help`` included, prints
    plain help."""

    def __init__(self, *args, formatter_class=PlainHelpFormatter, **kwargs) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


class VAECLI(LightningCLI):
    """``vae fit|validate|test|predict``: model and data chosen by ``class_path`` in YAML."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs) -> None:
        drop_nvml_cuda_check()
        self._new_run_dir: Path | None = None
        self._made_from: Path | None = None  # the highest folder of _new_run_dir's path this run made
        try:
            self._init(args, run, **kwargs)
        except UserError:
            self._remove_new_run_dir()
            raise

    def _remove_new_run_dir(self) -> None:
        """A run refused before it wrote anything leaves no empty version folder behind, nor the
        folders above it that it made (a new ``default_root_dir`` and its ``checkpoints/``)."""
        folder, top = self._new_run_dir, self._made_from
        if folder is None or not folder.is_dir() or any(folder.iterdir()):
            return
        folder.rmdir()
        while top is not None and folder != top and top in folder.parents:
            folder = folder.parent
            if not folder.is_dir() or any(folder.iterdir()):
                return
            folder.rmdir()

    def _init(self, args: list[str] | None, run: bool, **kwargs) -> None:
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
            parser_class=PlainArgumentParser,
            args=args,
            run=run,
            **kwargs,
        )

    @override
    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        try:
            super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        except ArgumentError as err:
            raise UserError(str(err)) from None

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        argv = list(args) if isinstance(args, (list, tuple)) else sys.argv[1:] if args is None else None
        self._argv = argv or []
        for name in config_files(self._argv):  # jsonargparse gives a traceback for a binary file
            if Path(name).is_file() and not _is_text(name):
                read_config_file(name)  # its one line
        given = with_saved_config(argv) if argv is not None else None
        try:
            with console.without(console.CLI_ARGS):  # the argv with the saved config is the command line
                super().parse_arguments(parser, args if given is None or (given == argv and args is None) else given)
        except ArgumentError as err:
            raise UserError(explain.explain(err, argv or [], _known_keys(parser, argv or []))) from None
        sub = self.config.get("subcommand")
        preflight.check_seed_everything(self.config[sub] if sub else self.config)

    @override  # a private LightningCLI hook: listed in runtime/compat.py's PRIVATE, tested there
    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return super()._parse_ckpt_path()
        # resolve `last` and refuse a broken or foreign checkpoint before Lightning merges its
        # hyper-parameters into the config
        resolve_ckpt_path(self.config[subcommand], subcommand)
        # LightningCLI replaces the model's config by the checkpoint's hyper-parameters, command
        # line included; k for the importance-weighted bound is an evaluation setting of this run
        init = self.config[subcommand].model.get("init_args")
        k = init.get("iw_samples") if init is not None else None
        flags = model_flags(getattr(self, "_argv", []))
        given = {key: init.get(key) for key in flags} if init is not None else {}
        super()._parse_ckpt_path()
        init = self.config[subcommand].model.get("init_args")
        if k is not None and init is not None:
            init.iw_samples = k
        verb = "resumes" if subcommand == "fit" else "evaluates"
        argv = getattr(self, "_argv", [])
        for key, value in given.items():
            if init is not None and init.get(key) != value:
                typed = flag_value(argv, f"--model.init_args.{key}") or flag_value(argv, f"--model.{key}")
                raise UserError(
                    f"--model.init_args.{key} {typed or _shown(value)} cannot apply to --ckpt_path: {subcommand} "
                    f"{verb} the model as it was trained (its {key} is {_shown(init.get(key))}), and only "
                    "iw_samples is a setting of the evaluation; leave the flag out, or fit a model with it."
                )

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # a batch count stays a count: `limit_test_batches: 1` is one batch, not 1.0 (all)
        compat.parse_int_first(parser, tuple(f"trainer.limit_{s}_batches" for s in ("train", "val", "test", "predict")))
        parser.add_lightning_class_args(Checkpoint, "checkpoint")
        parser.add_lightning_class_args(ImageLogger, "images")
        parser.add_lightning_class_args(NonFiniteGuard, "nonfinite")
        parser.add_lightning_class_args(CollapseMonitor, "collapse")
        parser.add_lightning_class_args(Disentanglement, "disentanglement")  # vae test on data with factors
        parser.add_lightning_class_args(AnomalyScores, "scores")  # vae predict: one CSV row per input
        parser.add_lightning_class_args(RNGState, "rng_state")  # exact resume: noise continues
        parser.add_lightning_class_args(SLURMPreemption, "preemption")  # USR1 on SLURM: save, requeue
        parser.add_lightning_class_args(RunRecord, "record")  # history.csv, summary.json for `vae compare`
        parser.add_lightning_class_args(WandbSummaries, "wandb_summaries")  # best val/elbo, KL table
        parser.add_argument(
            "--eval_run",
            choices=continuation.EVAL_RUN,
            default="continue",
            help="validate/test/predict of a fit's checkpoint: continue the fit's W&B run, or make "
            "a separate run (job_type eval, the fit's group, fit_run_id in its config)",
        )
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

    @override
    def before_instantiate_classes(self) -> None:
        config = self._run_config
        root = config.trainer.default_root_dir
        preflight.check_config(config, self.subcommand)
        continuation.apply(config, self.subcommand)  # an evaluation logs into its fit's run
        loggers = config.trainer.logger
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init = getattr(logger, "init_args", None)
            if init is not None and init.get("save_dir") in (None, ".", ""):
                init["save_dir"] = root  # loggers write beside the checkpoints unless told otherwise
            if init is not None:  # every output path is checked before a folder is made
                check_output("trainer.logger.init_args.save_dir", init.get("save_dir"), "dir")
            if init is not None and "WandbLogger" in str(getattr(logger, "class_path", "")):
                set_wandb_resume(init)  # a requeued SLURM job continues its W&B run
        checkpoints = Path(root) / "checkpoints"
        # every fit gets its own checkpoint and image folders; a resumed fit keeps its run's
        if config.checkpoint.dirpath is None:
            if self.subcommand == "fit":
                missing = [p for p in (checkpoints, *checkpoints.parents) if not p.exists()]
                folder = run_checkpoint_dir(checkpoints, config.ckpt_path)
                console.own_checkpoint_dir(str(folder))  # new or the resumed run's own: "not empty" is noise
                if folder.is_dir() and not any(folder.iterdir()):
                    self._new_run_dir = folder
                    self._made_from = missing[-1] if missing else folder
                config.checkpoint.dirpath = str(folder)
                if config.images.dirpath is None:
                    config.images.dirpath = os.path.join(root, "images", Path(config.checkpoint.dirpath).name)
            else:
                config.checkpoint.dirpath = str(checkpoints)

    @override
    def instantiate_classes(self) -> None:
        given = self._run_config.model.init_args.get("image_shape")
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as err:
            raise UserError(explain.explain(err)) from None
        except MisconfigurationException as err:  # the Trainer's own checks of trainer.* values
            raise UserError(f"trainer: {str(err).strip().splitlines()[0]}") from None
        data_shape = tuple(self.datamodule.image_shape)
        if given is not None and tuple(given) != data_shape:
            raise UserError(
                f"model.init_args.image_shape is {tuple(given)} but {type(self.datamodule).__name__} yields "
                f"{data_shape} images; remove image_shape (vae takes it from the data) or use matching data."
            )
        ckpt_path = self._run_config.get("ckpt_path")
        if ckpt_path not in (None, "last", "best", "hpc"):
            check_fits_model(ckpt_path, self.model)
        preflight.check_built(self.model, self.subcommand, self.trainer)

    def _before_run(self) -> None:
        """The last checks, on the set-up data, then the loggers: a run refused here wrote nothing."""
        preflight.check_data(self.model, self.datamodule, self.trainer, self.subcommand)
        start_wandb(self.trainer)  # bounded wait for an online W&B server, else offline

    # LightningCLI calls before_<subcommand> right before trainer.<subcommand>
    before_fit = before_validate = before_test = before_predict = _before_run

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # atomic checkpoint writes unless the config brings its own CheckpointIO
        plugins = compat.cli_setting(self, self.config_init, "trainer", default={}).get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        add_progress_display(compat.cli_setting(self, self.config_init, "trainer", default={}))
        trainer = super().instantiate_trainer(**{"plugins": plugins, **kwargs})
        trainer.callbacks = place_weight_averaging(trainer.callbacks)
        return trainer


def place_weight_averaging(callbacks: list) -> list:
    """The callbacks with weight averaging (Lightning's ``WeightAveraging``: ``EMAWeightAveraging``
    of ``configs/trainer/ema.yaml``) moved to just before ``SLURMPreemption``. After the callbacks
    that draw or measure at the end of a validation (``ImageLogger``, ``FID``, a user's, all earlier
    in the list): it swaps the raw weights back in its own ``on_validation_epoch_end``, so theirs
    still see the average. Before the ones that save at the end of a step (``SLURMPreemption``;
    Lightning puts ``ModelCheckpoint`` last): its ``on_train_batch_end`` updates the average first,
    so a checkpoint holds that step's average."""
    averaging = [c for c in callbacks if isinstance(c, WeightAveraging)]
    if not averaging:
        return callbacks
    rest = [c for c in callbacks if not isinstance(c, WeightAveraging)]
    at = next((i for i, c in enumerate(rest) if isinstance(c, SLURMPreemption)), len(rest))
    return rest[:at] + averaging + rest[at:]


def add_progress_display(trainer_config) -> None:
    """Put a ``ProgressDisplay`` among the trainer's callbacks unless the config brings its own
    progress bar or turns it off (Lightning's default bar redraws on every step)."""
    if trainer_config.get("enable_progress_bar") is False:
        return
    callbacks = trainer_config.get("callbacks") or []
    callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
    if not any(isinstance(c, ProgressBar) for c in callbacks):
        trainer_config["callbacks"] = [*callbacks, ProgressDisplay()]


def _is_text(name: str) -> bool:
    try:
        Path(name).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return False
    except OSError:
        pass  # jsonargparse names a file it cannot read
    return True


def _shown(value: Any) -> Any:
    """A class-typed argument by its class path, not jsonargparse's Namespace of all its arguments."""
    return value.get("class_path", value) if hasattr(value, "get") and "class_path" in value else value


def model_flags(argv: list[str]) -> list[str]:
    """The model arguments ``argv`` sets by flag, as keys under ``init_args`` (``--model.init_args.beta``
    and jsonargparse's short ``--model.beta`` both give ``beta``); iw_samples is left out."""
    keys = []
    for arg in argv:
        if not arg.startswith("--model.") or arg.startswith("--model.help"):
            continue
        key = arg[len("--model.") :].split("=", 1)[0]
        key = key[len("init_args.") :] if key.startswith("init_args.") else key
        if key and key != "iw_samples" and key not in ("class_path", "dict_kwargs"):
            keys.append(key)
    return keys


def _known_keys(parser: LightningArgumentParser, argv: list[str]) -> list[str]:
    """Option names of the subcommand in ``argv`` (for "did you mean" hints)."""
    sub = next((a for a in argv if not a.startswith("-")), None)
    try:
        return compat.subcommand_options(parser, sub) if sub is not None else []
    except KeyError:  # not a subcommand (jsonargparse's own error says so)
        return []
