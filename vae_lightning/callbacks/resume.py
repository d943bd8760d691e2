"""Exact resume: what a checkpoint needs beyond Lightning's own state, and preemption on SLURM.

Lightning saves weights, optimizer, loops and (for a loader with ``state_dict``, like
``BatchLoader``) the data position, but not the random number generators. ``RNGState`` adds
torch's global RNG (CPU and CUDA), which draws the reparameterization noise, so a resumed run
continues with the same noise. ``SLURMPreemption`` replaces Lightning's USR1 handler, which
saves the checkpoint inside the signal handler, at whatever instruction the signal lands on
(between a forward pass and its optimizer step, say); here the handler only raises a flag and
the checkpoint is written at the next step boundary, so it is an exact state of the run.
"""

from __future__ import annotations

import logging
import signal
import subprocess

import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from typing_extensions import override

from vae_lightning.runtime import compat, requeue_signal
from vae_lightning.runtime.atomic import atomic_open
from vae_lightning.runtime.slurm import slurm_job_id

log = logging.getLogger(__name__)


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGState(Callback):
    """Keeps torch's RNG state in checkpoints, so a resumed run draws the same noise.

    Saves torch's global RNG state (CPU, and CUDA when in use) in every checkpoint and restores
    it on resume. Validation draws its noise from a copy, so where a validation falls relative
    to an interruption never changes the training noise. Under DDP only rank 0 writes the
    checkpoint, so during a fit every rank's state is gathered into it (``ranks``, one per rank)
    and each rank restores its own; with another world size every rank takes rank 0's."""

    def __init__(self) -> None:
        self._train_state: dict | None = None  # the training stream, set aside during validation
        self._trainer: Trainer | None = None

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer

    @override
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._train_state = _rng_state()

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._train_state is not None:
            _set_rng_state(self._train_state)
            self._train_state = None

    @override
    def state_dict(self) -> dict:
        state = {"torch": self._train_state or _rng_state()}
        trainer = self._trainer
        # every rank saves during a fit (Lightning's checkpointing is collective there); other
        # stages may save on one rank only (Lightning's own requeue handler), so no gather
        if trainer is not None and trainer.world_size > 1 and trainer.state.fn == "fit" and dist.is_initialized():
            ranks: list = [None] * trainer.world_size
            dist.all_gather_object(ranks, state["torch"])
            state["ranks"] = ranks
        return state

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        ranks, trainer = state_dict.get("ranks"), self._trainer
        own = trainer is not None and ranks is not None and len(ranks) == trainer.world_size
        _set_rng_state(ranks[trainer.global_rank] if own else state_dict["torch"])


class SLURMPreemption(Callback):
    """Saves, requeues and stops a SLURM job on its requeue signal.

    Under SLURM, on the requeue signal (USR1, sent ``--signal=USR1@<s>`` before the time limit
    or by ``scancel --signal=USR1``): finish the current optimizer step, save
    ``<default_root_dir>/hpc_ckpt_<n>.ckpt`` (all ranks agree on the step) and stop; once the fit
    has ended, finish the W&B run and requeue the job with ``scontrol requeue`` (see
    ``_stop_and_requeue``). The requeued job runs the same command; Lightning finds the
    ``hpc_ckpt`` and resumes from it. Outside SLURM, or with ``auto_requeue: false`` in a
    ``SLURMEnvironment`` plugin, it does nothing. A USR1 that came while ``vae`` was starting up
    (recorded by ``runtime.requeue_signal``) counts as one that came during the first step.

    Args:
        done_file: a file written when the fit ends without a preemption (``vae slurm submit
            --test`` uses it so that a job requeued during its test re-runs only the test).
    """

    def __init__(self, done_file: str | None = None) -> None:
        self._signalled = False
        self._active = False
        self._requeued = False
        self.preempted = False  # read by RunRecord: summary.json says preempted until the job restarts
        self.done_file = done_file

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        env = compat.cluster_environment(trainer)
        slurm = isinstance(env, SLURMEnvironment) and env.auto_requeue
        if slurm and stage == "fit":
            # Installed before the trainer registers its handlers, so Lightning keeps ours for this
            # signal (it never overrides an existing one) and restores the previous one at the end.
            self._previous = signal.signal(env.requeue_signal, self._handler)
            self._signum, self._active = env.requeue_signal, True
        # A USR1 that came during start-up (runtime.requeue_signal recorded it) counts from here.
        # Then USR1 leaves the recorder: to ours, or back to the default action, so that Lightning
        # installs its own requeue handler (validate/test/predict: it keeps any existing one).
        early = requeue_signal.take() and slurm and env.requeue_signal == signal.SIGUSR1
        requeue_signal.release()
        if early and self._active:
            self._signalled = True  # saved and requeued after the first step
        elif early and trainer.is_global_zero:
            self.requeue(slurm_job_id())  # nothing to save outside a fit: the requeued job repeats it

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._active:
            signal.signal(self._signum, self._previous)
            self._active = False
        if self.preempted and not self._requeued:
            self._stop_and_requeue(trainer)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self.preempted and not self._requeued:  # saved already: the requeued job goes on from there
            self._stop_and_requeue(trainer)

    def _stop_and_requeue(self, trainer: Trainer) -> None:
        """The fit has stopped and written what it needs: finish the W&B run, then requeue.
        ``scontrol requeue`` makes SLURM send SIGTERM to every process of the job, the W&B service
        among them: a run still open then ends in a connection traceback of ~90 lines. This
        process ignores that SIGTERM and exits on its own (or SLURM's SIGKILL ends it)."""
        self._requeued = True
        if trainer.is_global_zero and any(isinstance(logger, WandbLogger) for logger in trainer.loggers):
            import wandb

            # non-zero after mark_preempting: W&B records the run as preempted, not finished
            wandb.finish(exit_code=128 + int(self._signum))
            wandb.teardown()  # the service ends now, not at the SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if trainer.is_global_zero:
            self.requeue(slurm_job_id())

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.done_file and not self.preempted and trainer.is_global_zero:
            with atomic_open(self.done_file, "w") as f:
                f.write(f"{trainer.global_step}\n")

    def requeue(self, job: str | None) -> None:
        try:
            result = subprocess.run(["scontrol", "requeue", str(job)], capture_output=True, text=True)
        except OSError as err:
            log.warning(f"Could not run `scontrol requeue {job}`: {err}")
            return
        if result.returncode:
            log.warning(f"`scontrol requeue {job}` failed: {result.stderr.strip()}")

    def _handler(self, signum, frame) -> None:
        self._signalled = True  # acted on at the next step boundary, see on_train_batch_end

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if not self._active or not trainer.strategy.reduce_boolean_decision(self._signalled, all=False):
            return
        # last.ckpt of this same moment too: a job script may resume with --ckpt_path last, and
        # the last.ckpt Lightning would write as the run stops is not exact after a stop in an
        # epoch's last step (tests/test_resume.py, found by bench/chaos.py). Written first, so that
        # the hpc_ckpt the requeued job restores knows it as its last_model_path: else the
        # restarted fit versions its final save as last-v1.ckpt beside this older last.ckpt
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "save_last", False):
                compat.save_last_checkpoint(callback, trainer)
        path = compat.hpc_save_path(trainer.default_root_dir)
        trainer.save_checkpoint(path)
        for logger in trainer.loggers:
            logger.save()
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.experiment.mark_preempting()  # W&B shows it as preempted, not crashed
            log.warning(f"Requeue signal: saved {path} at step {trainer.global_step}; requeueing the SLURM job.")
        self._signalled = False
        self.preempted = True
        trainer.should_stop = True  # the fit ends here; teardown requeues the job (see _stop_and_requeue)
