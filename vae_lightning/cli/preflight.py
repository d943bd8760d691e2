"""Checks that run before anything is built, so a mistake costs one line instead of a traceback
from a half-started (DDP) job: what this machine can run (accelerator, devices, precision), the
SLURM allocation, the output folders, (once the model exists) the optimizer's arguments, and
(once the data is set up, before any logger writes) what the data and the model make of each other.

Every sentence here comes from a check of our own values, not from another library's message.
"""

from __future__ import annotations

import math
import os
from typing import Any

from vae_lightning.errors import UserError
from vae_lightning.runtime.outputs import check_output
from vae_lightning.runtime.slurm import check_allocation

# every output path of `vae fit|validate|test|predict` (config key, kind); None values take a
# default under trainer.default_root_dir, which is checked first
OUTPUTS = (("trainer.default_root_dir", "dir"), ("checkpoint.dirpath", "dir"), ("images.dirpath", "dir"))
PREDICT_OUTPUTS = (("scores.path", "file"),)


def _get(ns: Any, dotted: str, default: Any = None) -> Any:
    for part in dotted.split("."):
        if ns is None:
            return default
        ns = ns.get(part) if hasattr(ns, "get") else getattr(ns, part, None)
    return default if ns is None else ns


# trainer counts Lightning divides by or counts down (below the least, a ZeroDivisionError once the
# run has started, or a setting that silently does nothing); None stays allowed where Lightning allows it
TRAINER_LEAST = (
    ("accumulate_grad_batches", 1),
    ("check_val_every_n_epoch", 1),
    ("log_every_n_steps", 0),
    ("num_sanity_val_steps", -1),
    ("min_steps", 0),
    ("min_epochs", 0),
)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_trainer_counts(config: Any) -> None:
    for key, least in TRAINER_LEAST:
        value = _get(config, f"trainer.{key}")
        if _number(value) and not value >= least:
            raise UserError(f"trainer.{key} must be >= {least}, got {value}.")
    interval = _get(config, "trainer.val_check_interval")
    if _number(interval) and not interval > 0:
        raise UserError(
            f"trainer.val_check_interval must be > 0 (a number of batches, or a fraction of the epoch), got {interval}."
        )


SEED_EVERYTHING_LIMIT = 2**32  # Lightning's seed_everything seeds numpy too, which takes 32-bit seeds


def check_seed_everything(config: Any) -> None:
    """``seed_everything`` is set right after parsing, before any other check: refuse it first."""
    seed = _get(config, "seed_everything")
    if _number(seed) and not (isinstance(seed, int) and 0 <= seed < SEED_EVERYTHING_LIMIT):
        raise UserError(f"seed_everything must be an integer from 0 to 2**32 - 1 (or true: a random one), got {seed}.")


def check_config(config: Any, subcommand: str) -> None:
    """Refuse, before any class is built, what this machine cannot run or where it cannot write."""
    devices = _get(config, "trainer.devices", "auto")
    check_hardware(_get(config, "trainer.accelerator", "auto"), devices, _get(config, "trainer.precision"))
    check_allocation(requested_devices(devices), int(_get(config, "trainer.num_nodes", 1) or 1))
    for flag, kind in OUTPUTS + (PREDICT_OUTPUTS if subcommand == "predict" else ()):
        check_output(flag, _get(config, flag), kind)
    check_trainer_counts(config)
    clip = _get(config, "trainer.gradient_clip_val")
    if isinstance(clip, (int, float)) and clip < 0:
        raise UserError(f"trainer.gradient_clip_val must be >= 0 (or null for no clipping), got {clip}.")
    lr = _get(config, "model.init_args.optimizer.init_args.lr")
    if isinstance(lr, (int, float)) and not lr > 0:
        raise UserError(f"model.init_args.optimizer.init_args.lr must be > 0, got {lr}.")


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask on Linux; all cores where the
    OS has no ``sched_getaffinity``, e.g. macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def requested_devices(devices: Any) -> int | None:
    """How many devices ``trainer.devices`` asks for; None for ``auto`` or ``-1`` (all)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1", ""):
            return None
        if "," in text:  # "0,1": device ids
            return len([d for d in text.split(",") if d.strip()])
        if not text.lstrip("-").isdigit():
            raise UserError(f"trainer.devices must be a number, a list of device ids or auto, got {devices!r}.")
        devices = int(text)
    if isinstance(devices, int):
        if devices == -1:
            return None
        if devices < 1:
            raise UserError(f"trainer.devices must be >= 1 (or -1 / auto for all), got {devices}.")
        return devices
    return None


def check_hardware(accelerator: Any, devices: Any, precision: Any) -> None:
    """Accelerator, device count and precision must exist here (Lightning would fail later, or
    oversubscribe the CPU, with a long traceback)."""
    import torch

    if not isinstance(accelerator, str):
        return  # an Accelerator object from YAML: Lightning checks it
    acc = accelerator.lower()
    cuda = torch.cuda.is_available()
    if acc in ("gpu", "cuda") and not cuda:
        raise UserError(
            f"trainer.accelerator is {accelerator!r} but this machine has no CUDA GPUs; use accelerator: cpu (or auto)."
        )
    if acc == "mps" and not torch.backends.mps.is_available():
        raise UserError(
            "trainer.accelerator is 'mps' but Apple's MPS is not available here; use accelerator: cpu (or auto)."
        )
    if acc not in ("auto", "cpu", "gpu", "cuda", "mps"):
        raise UserError(f"trainer.accelerator {accelerator!r} is not available here; use auto, cpu or gpu.")
    on_gpu = acc in ("gpu", "cuda") or (acc == "auto" and cuda)
    prec = str(precision) if precision is not None else ""
    if not on_gpu and prec in ("16", "16-mixed"):
        raise UserError(
            f"trainer.precision={prec} needs a CUDA GPU (float16 autocast); on the CPU use bf16-mixed "
            "(--config configs/trainer/bf16.yaml)."
        )
    count = requested_devices(devices)
    if count is not None:
        have, kind = (torch.cuda.device_count(), "CUDA GPUs") if on_gpu else (cpu_cores(), "CPU cores")
        if count > have:
            raise UserError(
                f"trainer.devices={devices} asks for {count} {'GPUs' if on_gpu else 'CPU processes'} but this machine "
                f"has {have} {kind}; use devices: {have} or fewer (or auto)."
            )
    if prec.startswith("bf16") and on_gpu and not torch.cuda.is_bf16_supported():
        raise UserError(f"trainer.precision={prec} needs a GPU with bfloat16 support; use 16-mixed or 32-true here.")
    if prec.startswith("transformer-engine"):
        raise UserError(
            f"trainer.precision={prec} needs NVIDIA Transformer Engine, which vae does not support; "
            "use bf16-mixed or 32-true."
        )


def check_built(model: Any, subcommand: str, trainer: Any = None) -> None:
    """Build the optimizer and LR scheduler once on the real parameters, so that their bad
    arguments (torch checks them in their constructors) are reported before training; refuse
    the trainer settings a manually optimized model (FactorVAE) cannot apply."""
    if subcommand != "fit" or not hasattr(model, "configure_optimizers"):
        return
    if trainer is not None and not getattr(model, "automatic_optimization", True):
        for key, value, neutral in (
            ("gradient_clip_val", trainer.gradient_clip_val, (None, 0)),
            ("accumulate_grad_batches", trainer.accumulate_grad_batches, (1,)),
        ):
            if value not in neutral:
                raise UserError(
                    f"{type(model).__name__} steps its optimizers by hand (manual optimization) and "
                    f"cannot apply trainer.{key}={value}; remove it."
                )
    try:
        configured = model.configure_optimizers()
    except (ValueError, TypeError, KeyError) as err:
        raise UserError(
            f"model.init_args.optimizer or lr_scheduler refused by torch: {str(err).strip().splitlines()[0]}."
        ) from None
    for scheduler in _schedulers(configured):
        _first_step(scheduler, getattr(model, "lr_interval", None))
    _check_training_memory(model, _optimizers(configured), trainer)


def _optimizers(configured: Any) -> list:
    """The optimizers in what ``configure_optimizers`` returned."""
    if isinstance(configured, (list, tuple)):
        return [o for item in configured for o in _optimizers(item)]
    if isinstance(configured, dict):
        return _optimizers(configured.get("optimizer"))
    return [configured] if hasattr(configured, "param_groups") else []


def _check_training_memory(model: Any, optimizers: list, trainer: Any) -> None:
    """The built weights fit (the model refuses them otherwise); their gradients and the
    optimizer's state (Adam: two moments per weight) must fit too, on the device that trains,
    else the first step is killed for memory (CPU) or fails with an out-of-memory error (GPU)."""
    import torch

    from vae_lightning.runtime.memory import available_memory, gigabytes

    count = sum(p.numel() for p in model.parameters())
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    defaults = [getattr(o, "defaults", {}) for o in optimizers]
    moments = max((2 if "betas" in d else 1 if d.get("momentum") else 0 for d in defaults), default=0)
    device = getattr(getattr(trainer, "strategy", None), "root_device", torch.device("cpu"))
    if device.type == "cuda":
        need, have = (2 + moments) * weights, torch.cuda.get_device_properties(device).total_memory
        what, where = "weights, gradients and optimizer state", f"the GPU {device}"
    elif device.type == "cpu":  # the weights are in RAM already: the memory left must hold the rest
        need, have = (1 + moments) * weights, available_memory()
        what, where = "gradients and optimizer state", "this machine"
    else:
        return
    if have is not None and need > have:
        raise UserError(
            f"training the model's {count:,} weights ({gigabytes(weights)}) needs {gigabytes(need)} for its {what} "
            f"but {where} has {gigabytes(have)}; lower model.init_args.latent_dim or the nets' widths "
            "(encoder/decoder init_args hidden, channels)."
        )


def _schedulers(configured: Any) -> list:
    """The LR schedulers in what ``configure_optimizers`` returned (a dict, a list of them, or optimizers)."""
    if isinstance(configured, (list, tuple)):
        return [s for item in configured for s in _schedulers(item)]
    if isinstance(configured, dict):
        found = configured.get("lr_scheduler", configured.get("scheduler"))
        found = found.get("scheduler") if isinstance(found, dict) else found
        return [found] if found is not None and hasattr(found, "step") else []
    return []


def _first_step(scheduler: Any, interval: str | None) -> None:
    """Step the scheduler twice, on the throwaway optimizer built above: torch checks some arguments
    only there (StepLR's step_size 0 divides by zero), which would otherwise end the run at its first
    step, and checks none that make the learning rate negative, infinite or zero for good."""
    import warnings

    from torch.optim.lr_scheduler import ReduceLROnPlateau

    if isinstance(scheduler, ReduceLROnPlateau):
        if interval == "step":  # Lightning would step it on val/loss at training steps that have none
            raise UserError(
                "model.init_args.lr_scheduler ReduceLROnPlateau steps on val/loss, which a training step does not "
                "have; set model.init_args.lr_interval: epoch."
            )
        if not scheduler.factor > 0:  # torch checks only factor < 1; 0 or less ends training at the first plateau
            raise UserError(
                f"model.init_args.lr_scheduler ReduceLROnPlateau factor must be > 0 (and < 1), got {scheduler.factor}."
            )
        return  # steps on a metric; its other arguments are checked when it is built
    lrs = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "step() before optimizer.step()": nothing is trained here
            for _ in range(2):  # two steps: a schedule may touch 0 at one step and rise again (cosine, T_max 1)
                scheduler.step()
                lrs.append(min(group["lr"] for group in scheduler.optimizer.param_groups))
    except (ArithmeticError, ValueError, TypeError, IndexError) as err:
        raise UserError(
            f"model.init_args.lr_scheduler {type(scheduler).__name__} fails at its first step "
            f"({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else 'no message'}); "
            "check its init_args."
        ) from None
    # torch accepts e.g. ExponentialLR gamma <= 0, which trains nothing (lr 0) or climbs the loss (lr < 0)
    bad = next((lr for lr in lrs if not math.isfinite(lr) or lr < 0), None)
    if bad is None and all(lr == 0 for lr in lrs):
        bad = 0.0
    if bad is not None:
        raise UserError(
            f"model.init_args.lr_scheduler {type(scheduler).__name__} makes the learning rate {bad:g} at its first "
            f"steps{_suspect_args(scheduler)}; give init_args that keep it positive and finite."
        )


def _suspect_args(scheduler: Any) -> str:
    """`` (its gamma=0)``: the scheduler's numeric arguments that are not positive and finite, as it
    stored them ("" when it stored none: a LambdaLR's function)."""
    import inspect

    names = [n for n in inspect.signature(type(scheduler)).parameters if n not in ("optimizer", "last_epoch")]
    values = {n: getattr(scheduler, n, None) for n in names}
    numbers = {n: v for n, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    suspects = [f"{n}={v}" for n, v in numbers.items() if not (math.isfinite(v) and v > 0)]
    return f" (its {', '.join(suspects)})" if suspects else ""


def check_data(model: Any, datamodule: Any, trainer: Any, subcommand: str) -> None:
    """Set the data up and refuse what the run would refuse only once started: data that is
    missing or that the model cannot use, a training split without one full batch, a
    validation interval longer than the epoch, anomaly labels the scored inputs do not have.
    Runs before any logger opens a file, so a refused run leaves the folders of finished runs
    (an earlier ``version_0/test/metrics.csv``) untouched."""
    from vae_lightning.evaluation import decisions
    from vae_lightning.evaluation.scoring import AnomalyScores

    if datamodule is None or not hasattr(datamodule, "setup"):
        return
    datamodule.setup(subcommand)  # the data modules keep what they loaded: Lightning's setup reuses it
    if hasattr(model, "check_data"):
        model.check_data(datamodule, subcommand)
    world = max(1, int(getattr(trainer, "num_devices", 1) or 1) * int(getattr(trainer, "num_nodes", 1) or 1))
    if subcommand == "fit":
        _check_train_batches(datamodule, trainer, world)
    scores = next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, AnomalyScores)), None)
    if subcommand == "predict" and scores is not None:
        scores.check_data(datamodule, world)
        if scores.anomalous_labels is not None:
            labels = _predict_labels(datamodule, trainer)
            decisions.check_labels(labels, scores.anomalous_labels, type(datamodule).__name__)


def _limited(batches: int, limit: int | float) -> int:
    """The batches Lightning runs of ``batches`` under ``trainer.limit_*_batches``."""
    return min(batches, limit) if isinstance(limit, int) else int(batches * limit)


def _check_train_batches(datamodule: Any, trainer: Any, world: int) -> None:
    n, size = getattr(datamodule, "num_train", None), getattr(datamodule, "batch_size", None)
    if not isinstance(n, int) or not isinstance(size, int):
        return
    batches = (n // world) // size  # training batches drop the incomplete last one
    if batches == 0:
        per = f" per device ({n} over {world})" if world > 1 else ""
        raise UserError(
            f"data.init_args.batch_size={size} is larger than the {n // world} training examples{per}, so no "
            f"training batch is full; use data.init_args.batch_size: {max(1, n // world)} or less."
        )
    interval, every = trainer.val_check_interval, trainer.check_val_every_n_epoch
    epoch = _limited(batches, trainer.limit_train_batches)
    if isinstance(interval, int) and every is not None and 0 < epoch < interval:
        raise UserError(
            f"trainer.val_check_interval={interval} is more than the {epoch} training batches of an epoch; use "
            f"{epoch} or less, a fraction of the epoch (0.5), or trainer.check_val_every_n_epoch: null to count "
            "steps across epochs."
        )


def _predict_labels(datamodule: Any, trainer: Any):
    """The labels of the inputs ``vae predict`` will score (its first ``limit_predict_batches``),
    or None when the data has no class labels."""
    import torch

    loader = datamodule.predict_dataloader()
    total = len(loader) if hasattr(loader, "__len__") else None
    limit = trainer.limit_predict_batches
    wanted = _limited(total, limit) if total is not None else (limit if isinstance(limit, int) else None)
    labels = []
    for i, batch in enumerate(loader):
        if wanted is not None and i >= wanted:
            break
        y = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        if not torch.is_tensor(y) or y.dim() != 1:
            return None
        labels.append(y.cpu())
    return torch.cat(labels) if labels else None


def check_device(flag: str, device: str) -> None:
    """A ``--device`` of ``vae sample|traverse|interpolate|encode`` must exist on this machine
    (else loading the checkpoint there fails with torch's message, shown as "does not fit")."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"{flag} must be a torch device such as cpu, cuda or cuda:1, got {device!r}.") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{flag} {device}: this machine has no CUDA GPU (torch finds none); use {flag} cpu.")
        if dev.index is not None and dev.index >= count:
            raise UserError(f"{flag} {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}.")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{flag} {device}: Apple's MPS is not available here; use {flag} cpu.")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{flag} {device}: vae runs on cpu, cuda or mps, not {dev.type}.")


SEED_LIMIT = 2**63  # torch.Generator.manual_seed takes 64-bit seeds; seed + 1 is used too


def check_seed(flag: str, seed: int) -> None:
    if not 0 <= seed < SEED_LIMIT:
        raise UserError(f"{flag} must be between 0 and 2**63 - 1, got {seed}.")
