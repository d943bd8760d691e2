"""`vae` with one interruption injected, for ``bench.chaos``: ``python -m bench.chaos_inject fit ...``.

``VAE_CHAOS=<kind>:<n>`` picks the interruption; n counts from this start (a resumed start
counts from its checkpoint's step):
  kill:n       SIGKILL in the n-th training step, between its forward and backward pass
  kill_save:n  SIGKILL half-way through writing the n-th checkpoint file (last, best or hpc)
  usr1:n       SIGUSR1 in the n-th training step (bench.chaos sets SLURM variables for it)
  raise:n      a RuntimeError in the n-th training step
  none:0       no interruption
"""

import os
import signal

MARK = "chaos: injected"  # in the RuntimeError's message, so the driver tells it from a real failure

kind, n = os.environ.get("VAE_CHAOS", "none:0").split(":")
n = int(n)

if kind in ("kill", "usr1", "raise"):
    from vae_lightning.models import VAE

    step = VAE.training_step
    steps_done = 0

    def training_step(self, batch, batch_idx):
        """The model's step, interrupted after the forward pass of this start's n-th step."""
        global steps_done
        out = step(self, batch, batch_idx)
        steps_done += 1
        if steps_done == n and kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if steps_done == n and kind == "usr1":
            os.kill(os.getpid(), signal.SIGUSR1)  # SLURMPreemption saves after this step's update
        if steps_done == n and kind == "raise":
            raise RuntimeError(f"{MARK} at global step {self.global_step}")
        return out

    VAE.training_step = training_step

if kind == "kill_save":
    from vae_lightning.runtime import atomic

    writes = 0

    class Killed:
        """A file that writes half of its bytes, then kills the process."""

        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def write(self, data):
            self.f.write(bytes(data)[: len(data) // 2])
            self.f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        def __getattr__(self, name):
            return getattr(self.f, name)

    def patched_open(file, mode="r", *args, **kwargs):
        """runtime.atomic's `open`: the n-th checkpoint file opened is killed half-way."""
        global writes
        f = open(file, mode, *args, **kwargs)
        if ".ckpt.tmp-" not in str(file):
            return f
        writes += 1
        return Killed(f) if writes == n else f

    atomic.open = patched_open  # shadows the builtin in that module only

from vae_lightning.cli import main  # noqa: E402

main()
