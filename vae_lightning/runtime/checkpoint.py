"""Checkpoint IO, all of it: atomic writes that survive crashes and full disks, one folder of
checkpoints per run, the checks that refuse a checkpoint which does not belong to the configured
model, and ``load_model`` for the picture commands.

Layout (``vae fit`` with the default ``checkpoint.dirpath``)::

    <default_root_dir>/checkpoints/version_0/last.ckpt, best-<step>.ckpt   # first run
    <default_root_dir>/checkpoints/version_1/...                           # second run

Each new run takes the next free ``version_N`` (made with ``mkdir``, so two runs started at once
never share one). ``--ckpt_path last`` means the newest ``last.ckpt`` under
``<default_root_dir>/checkpoints/``, and a run resumed from a checkpoint in ``version_N`` keeps
writing to ``version_N``.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from typing_extensions import override

from vae_lightning.errors import UserError
from vae_lightning.runtime.atomic import atomic_open
from vae_lightning.runtime.imports import locate
from vae_lightning.runtime.slurm import in_slurm_job, slurm_job_id

#: set by the process that picks the run folder, read by the DDP worker processes it launches
RUN_DIR_ENV = "VAE_RUN_DIR"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a hidden temporary file in the same folder, fsyncs it, then
    renames it over the target (``os.replace`` is atomic on POSIX). A process killed while
    saving leaves the previous file untouched; a failed write (disk full, quota, file-size
    limit) removes the temporary file and stops the run with one sentence."""

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options.")
        path = Path(path)
        data = io.BytesIO()  # serialize first, so that only file-system errors remain below
        torch.save(checkpoint, data)
        try:
            with atomic_open(path, "wb") as f:
                f.write(data.getbuffer())
        except OSError as err:
            raise UserError(
                f"cannot write checkpoint {str(path)!r} ({err.strerror or err}); the previous checkpoints in "
                "that folder are intact: free disk space (or set checkpoint.dirpath elsewhere) and resume "
                "with --ckpt_path last."
            ) from err


# ---- run folders --------------------------------------------------------------------------


def new_version_dir(checkpoints: Path) -> Path:
    """Create and return ``checkpoints/version_N`` with N one past the highest taken."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in checkpoints.iterdir() if (m := re.fullmatch(r"version_(\d+)", p.name))]
    n = max(taken, default=-1) + 1
    while True:
        try:
            (checkpoints / f"version_{n}").mkdir()
            return checkpoints / f"version_{n}"
        except FileExistsError:  # another run took it a moment ago
            n += 1


#: the provisional folder name of a process that is not global rank 0, replaced in ``setup``
PENDING_DIR = "from-global-rank-0"


def launched_as_rank_zero() -> bool:
    """False when the environment names this process a non-zero rank or node (``RANK``,
    ``LOCAL_RANK``, ``NODE_RANK``, ``GROUP_RANK``: torchrun's and Lightning's variables)."""
    return all(int(os.environ.get(name) or 0) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


def run_checkpoint_dir(checkpoints: Path, resume_from: str | None) -> Path:
    """The folder this fit writes checkpoints to: the resumed checkpoint's own folder when it lies
    under ``checkpoints``, the folder picked by the launching process in a DDP worker,
    ``slurm-<job id>`` in a SLURM job, else a new ``version_N`` (made by global rank 0 only; any
    other node gets the ``PENDING_DIR`` name, which ``ModelCheckpoint.setup`` replaces by rank 0's
    folder through the strategy's broadcast)."""
    if os.environ.get(RUN_DIR_ENV) and (os.environ.get("LOCAL_RANK") or os.environ.get("RANK")):
        return Path(os.environ[RUN_DIR_ENV])
    if in_slurm_job():
        # every rank that srun starts, and the requeued job after a preemption, must agree on the
        # folder: name it after the job (and array task) instead of taking the next free version
        folder = checkpoints / f"slurm-{slurm_job_id()}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    if resume_from and os.path.isfile(resume_from):
        folder = Path(resume_from).resolve().parent
        if folder == checkpoints.resolve() or checkpoints.resolve() in folder.parents:
            return folder
    if not launched_as_rank_zero():
        # another node (outside SLURM): global rank 0 picks the folder and the checkpoint callback
        # receives it by broadcast in its setup; making one here would leave a stray empty folder
        # on a shared file system and a useless one on a node's own disk
        return checkpoints / PENDING_DIR
    folder = new_version_dir(checkpoints)
    os.environ[RUN_DIR_ENV] = str(folder)  # inherited by the DDP workers Lightning launches
    return folder


def find_last(checkpoints: Path) -> Path | None:
    """The newest ``last.ckpt`` in ``checkpoints`` or one of its run folders (None: none yet)."""
    found = [p for p in (checkpoints / "last.ckpt", *checkpoints.glob("*/last.ckpt")) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def find_best(checkpoints: Path) -> Path:
    """For ``vae test|validate|predict --ckpt_path best``: the ``best-*.ckpt`` (by the checkpoint
    monitor, val/loss by default) of this SLURM job's run folder, else of the newest run; that
    run's ``last.ckpt`` when it saved no best one."""
    job = slurm_job_id() if in_slurm_job() else None
    run = checkpoints / f"slurm-{job}" if job else None
    if run is None or not (run / "last.ckpt").is_file():
        last = find_last(checkpoints)
        if last is None:
            raise UserError(
                f"--ckpt_path best: no run with a last.ckpt under {str(checkpoints)!r}; train first or "
                "give a checkpoint file."
            )
        run = last.parent
    best = sorted(run.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    return best[-1] if best else run / "last.ckpt"


# ---- refusing checkpoints that do not fit -------------------------------------------------


def read_checkpoint(path: str) -> dict:
    """Open a checkpoint memory-mapped (the weights are not read); ``UserError`` naming the
    file when it is not a torch file at all, truncated, corrupt or not a Lightning checkpoint."""
    check_torch_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for broken files
        reason = (str(err).splitlines() or [type(err).__name__])[0].split(". ")[0][:100]
        raise UserError(
            f"checkpoint {path!r} is truncated or corrupt ({reason}); "
            "use another checkpoint, e.g. an earlier one from the same folder."
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(
            f"{path!r} is not a Lightning checkpoint (it has no state_dict); give a .ckpt file written by vae fit."
        )
    return ckpt


#: how a file written by ``torch.save`` begins: a zip archive, or (before torch 1.6) a pickle
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def check_torch_file(path: str) -> None:
    """A file that does not begin as ``torch.save`` writes is no checkpoint (a YAML given in its
    place is the usual mistake); a truncated or damaged checkpoint still begins so."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return  # torch.load below says what is wrong with the path
    if not head or head.startswith(_TORCH_MAGIC):
        return  # an empty file is a checkpoint cut off while it was written
    try:
        head.decode("utf-8")
        text = b"\x00" not in head
    except UnicodeDecodeError as err:
        text = err.start > len(head) - 4 and b"\x00" not in head  # a multi-byte character cut at 512 bytes
    kind = "a YAML/text file" if text else "a file that torch.save did not write"
    raise UserError(f"{path!r} is {kind}, not a checkpoint (.ckpt); give a .ckpt file written by vae fit.")


def resolve_ckpt_path(config, subcommand: str) -> None:
    """Turn ``--ckpt_path last`` into the newest ``last.ckpt`` of this run name and refuse a
    checkpoint that is missing, broken, or of another model class or latent size than the
    config asks for (Lightning would otherwise adopt the checkpoint's model settings silently)."""
    path = config.get("ckpt_path")
    checkpoints = Path(config.checkpoint.dirpath or Path(config.trainer.default_root_dir) / "checkpoints")
    if path == "last":
        last = find_last(checkpoints)
        if last is None and subcommand != "fit":
            raise UserError(
                f"--ckpt_path last: no last.ckpt under {str(checkpoints)!r}; train first or give a checkpoint file."
            )
        if last is None:
            return  # a first fit with "last" starts fresh (Lightning warns), so job scripts can always pass it
        path = config.ckpt_path = str(last)
    if path == "best" and subcommand != "fit":
        path = config.ckpt_path = str(find_best(checkpoints))
    if path in (None, "best", "hpc") or "://" in str(path):
        return
    if not os.path.isfile(path):
        raise UserError(f"--ckpt_path {path!r}: no such checkpoint file; give the path of a .ckpt file (or last).")
    hparams = read_checkpoint(path).get("hyper_parameters") or {}
    model = config.get("model")
    wanted = getattr(model, "class_path", None) if model is not None else None
    saved = hparams.get("_class_path")
    if saved and wanted and locate(saved) is not locate(wanted):
        raise UserError(
            f"checkpoint {path!r} holds a {saved} but the config builds a {wanted}; "
            f"set --model {saved} or use a checkpoint of this model."
        )
    init = getattr(model, "init_args", None)
    ours = init.get("latent_dim") if init is not None else None
    if hparams.get("latent_dim") is not None and ours is not None and hparams["latent_dim"] != ours:
        raise UserError(
            f"checkpoint {path!r} was trained with latent_dim={hparams['latent_dim']} but the config gives "
            f"latent_dim={ours}; use the model settings of the run that wrote it."
        )


def check_fits_model(path: str, model: torch.nn.Module) -> None:
    """After the model is built: the checkpoint's image shape and every weight's shape must
    match, else ``UserError`` naming the file and the first mismatch."""
    ckpt = read_checkpoint(path)
    saved, ours = (ckpt.get("hyper_parameters") or {}).get("image_shape"), getattr(model, "image_shape", None)
    if saved is not None and ours is not None and tuple(saved) != tuple(ours):
        raise UserError(
            f"checkpoint {path!r} was trained on images of shape {tuple(saved)} but the data gives {tuple(ours)}; "
            "use the data settings of the run that wrote it."
        )
    ours_sd, theirs = model.state_dict(), ckpt["state_dict"]
    settings = getattr(type(model), "settings_of_weights", lambda sd: {})(theirs)
    for key, value in settings.items():
        configured = getattr(model, key, None)
        if configured is not None and configured != value:
            raise UserError(
                f"checkpoint {path!r} holds weights for {key}={value} but the configured model has {key}={configured}; "
                f"pass --model.init_args.{key} {value} (or use a checkpoint of this model)."
            )
    for name, tensor in ours_sd.items():
        if name not in theirs:
            raise UserError(f"checkpoint {path!r} has no weights for {name}; it was written by a different net.")
        if tuple(theirs[name].shape) != tuple(tensor.shape):
            raise UserError(
                f"checkpoint {path!r} has {name} of shape {tuple(theirs[name].shape)} but the configured net "
                f"needs {tuple(tensor.shape)}; use the encoder/decoder settings of the run that wrote it."
            )
    extra = sorted(set(theirs) - set(ours_sd))
    if extra:
        raise UserError(
            f"checkpoint {path!r} has weights the configured net lacks ({extra[0]}, ...); "
            "it was written by a different net."
        )


# ---- loading a trained model (vae sample|traverse|interpolate) ------------------------------


def checkpoint_model_class(path: str | Path) -> type:
    """The model class of a checkpoint written by ``vae fit``; raises ``UserError`` when the
    file is missing, truncated or not a checkpoint, or holds another model class."""
    from vae_lightning.models import VAE

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist; pass the path of a .ckpt file written by `vae fit`.")
    hparams = read_checkpoint(str(path)).get("hyper_parameters") or {}
    class_path = hparams.get("_class_path", "vae_lightning.models.VAE")
    cls = locate(class_path)
    if cls is None:
        raise UserError(f"checkpoint {str(path)!r} needs the model class {class_path!r}, which cannot be imported.")
    if not (isinstance(cls, type) and issubclass(cls, VAE)):
        raise UserError(
            f"checkpoint {str(path)!r} holds a {class_path!r}, not a vae_lightning VAE model; "
            "pass a checkpoint written by `vae fit`."
        )
    return cls


def load_model(path: str | Path, map_location: str = "cpu"):
    """The ``VAE`` (or subclass) saved in a checkpoint written by ``vae fit``, in eval mode.
    Raises ``UserError`` for the cases of ``checkpoint_model_class`` and for weights that do not fit."""
    path = Path(path)
    _check_device(map_location)
    cls = checkpoint_model_class(path)
    # settings the weights fix override the saved ones (an older FactorVAE's disc_layers)
    fixed = cls.settings_of_weights(read_checkpoint(str(path))["state_dict"])
    try:
        # Lightning's advice to a class author (a likelihood or prior built by jsonargparse is saved
        # twice) says nothing a caller of load_model can act on. The library cannot import
        # cli/console.py, so the filter lives here, for this one call and Lightning's one message.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Attribute '\w+' is an instance of `nn.Module` and is already")
            model = cls.load_from_checkpoint(path, map_location=map_location, **fixed)
    except (RuntimeError, TypeError, ValueError, KeyError) as err:
        if _out_of_memory(err):
            raise UserError(
                f"out of memory loading {cls.__name__} from {str(path)!r} onto {str(map_location)!r}; "
                "free memory or load it onto another device (e.g. --device cpu)."
            ) from None
        # wrong keys or shapes, or settings its constructor refuses: a checkpoint of another model
        raise UserError(
            f"checkpoint {str(path)!r} does not fit {cls.__name__} "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]})."
        ) from None
    return model.eval()


def _check_device(map_location) -> None:
    """A device this machine has, before the checkpoint is read: CUDA missing is said as such."""
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError):
        raise UserError(f"device {str(map_location)!r} is not a torch device; use e.g. cpu, cuda or cuda:1.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {str(map_location)!r}: CUDA is missing on this machine (no CUDA GPU); use cpu.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(
            f"device {str(map_location)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s); "
            "use a lower index."
        )


def _out_of_memory(err: BaseException) -> bool:
    # torch's CUDA allocator raises OutOfMemoryError; its CPU allocator a RuntimeError with this text
    return isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in str(err)
