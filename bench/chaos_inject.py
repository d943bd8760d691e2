"""`vae` with one fault injected: ``python -m bench.chaos_inject fit ...``, the one injector of
``bench.chaos`` and ``tests/test_faults.py``. The patches apply in every process, DDP workers included
(Lightning starts them with the same ``-m`` command and environment).

``VAE_CHAOS=<kind>:<n>[:<m>]`` picks the fault; a step n counts from this start (a resumed start
counts from its checkpoint's step):
  kill:n         SIGKILL in the n-th training step, between its forward and backward pass
  kill_save:n    SIGKILL half-way through writing the n-th checkpoint file (last, best or hpc)
  usr1:n         SIGUSR1 in the n-th training step (the driver sets FAKE_SLURM for it)
  raise:n        a RuntimeError in the n-th training step
  crash_rank:r:s rank r raises a RuntimeError at global step s, before the step
  slow_save:n    the n-th save of last.ckpt writes half its bytes, touches <file>.writing, sleeps
  fsize_after:n  after n saves of last.ckpt, files may grow to 1 kB only (as on a full disk)
  none:0         no fault
"""

import os
import resource
import signal
import time
from pathlib import Path

MARK = "chaos: injected"  # in the RuntimeError's message, so the driver tells it from a real failure

# the settings within a SLURM job that Lightning's SLURMEnvironment.detect() needs (a job name other than bash)
FAKE_SLURM = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "vae-fake",
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_NNODES": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NODELIST": "localhost",
}

# `vae` flags of a CPU fit that is reproducible and prints and logs nothing of its own
QUIET_CPU = [
    "--trainer.accelerator",
    "cpu",
    "--trainer.deterministic",
    "true",
    "--trainer.logger",
    "false",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]


def _patch_step(kind: str, params: list[int]) -> None:
    from vae_lightning.models import VAE

    step = VAE.training_step
    steps_done = 0

    def training_step(self, batch, batch_idx):
        """The model's step, interrupted before it (crash_rank) or after the forward pass of this start's n-th step."""
        nonlocal steps_done
        if kind == "crash_rank" and self.global_rank == params[0] and self.global_step == params[1]:
            raise RuntimeError(f"injected crash on rank {self.global_rank}")
        out = step(self, batch, batch_idx)
        steps_done += 1
        if steps_done == params[0] and kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if steps_done == params[0] and kind == "usr1":
            os.kill(os.getpid(), signal.SIGUSR1)  # SLURMPreemption saves after this step's update
        if steps_done == params[0] and kind == "raise":
            raise RuntimeError(f"{MARK} at global step {self.global_step}")
        return out

    VAE.training_step = training_step


class _HalfWritten:
    """A file whose write stops half-way, then calls ``stop`` (which kills the process or sleeps)."""

    def __init__(self, f, stop):
        self.f, self.stop = f, stop

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

    def write(self, data):
        self.f.write(bytes(data)[: len(data) // 2])
        self.f.flush()
        self.stop(self.f)

    def __getattr__(self, name):
        return getattr(self.f, name)


def _kill(f) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _mark_and_sleep(f) -> None:
    Path(f.name).with_suffix(".writing").touch()
    time.sleep(600)  # until the test kills the process


def _patch_save(kind: str, n: int) -> None:
    from vae_lightning.runtime import atomic

    # kill_save counts every checkpoint file, the others the saves of last.ckpt
    which = ".ckpt.tmp-" if kind == "kill_save" else ".last.ckpt."
    saves = 0

    def patched_open(file, mode="r", *args, **kwargs):
        """runtime.atomic's `open`: counts the checkpoint writes and injects the fault."""
        nonlocal saves
        f = open(file, mode, *args, **kwargs)
        if which not in str(file):
            return f
        saves += 1
        if kind == "fsize_after" and saves == n + 1:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        if saves == n and kind in ("kill_save", "slow_save"):
            return _HalfWritten(f, _kill if kind == "kill_save" else _mark_and_sleep)
        return f

    atomic.open = patched_open  # shadows the builtin in that module only


def install(spec: str) -> None:
    """Patch this process for the fault ``spec`` (``<kind>:<n>[:<m>]``, see the module's docstring)."""
    kind, *params = spec.split(":")
    params = [int(p) for p in params]
    if kind in ("kill", "usr1", "raise", "crash_rank"):
        _patch_step(kind, params)
    if kind in ("kill_save", "slow_save", "fsize_after"):
        _patch_save(kind, params[0])


if __name__ == "__main__":
    install(os.environ.get("VAE_CHAOS", "none:0"))
    from vae_lightning.cli import main

    main()
