"""`vae` with a fault injected, for the fault tests (run as a script in a subprocess).

VAE_FAULT selects the fault; the patches apply in every process, DDP workers included:
  crash_rank:R:S   rank R raises RuntimeError at global step S
  slow_save:N      the N-th save of last.ckpt writes half its bytes, touches <file>.writing, sleeps
  fsize_after:N    after N saves of last.ckpt, files may grow to 1 kB only (as on a full disk)
"""

import os
import resource
import signal
import time
from pathlib import Path

kind, *params = os.environ.get("VAE_FAULT", "none").split(":")
params = [int(p) for p in params]

if kind == "crash_rank":
    from vae_lightning.models import VAE

    step = VAE.training_step

    def training_step(self, batch, batch_idx):
        if self.global_rank == params[0] and self.global_step == params[1]:
            raise RuntimeError(f"injected crash on rank {self.global_rank}")
        return step(self, batch, batch_idx)

    VAE.training_step = training_step

if kind in ("slow_save", "fsize_after"):
    from vae_lightning.runtime import atomic

    saves = 0

    class Slow:
        """A file whose write stops half-way, marks itself and sleeps until the test kills it."""

        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def write(self, data):
            self.f.write(bytes(data)[: len(data) // 2])
            self.f.flush()
            Path(self.f.name).with_suffix(".writing").touch()
            time.sleep(600)

        def __getattr__(self, name):
            return getattr(self.f, name)

    def patched_open(file, mode="r", *args, **kwargs):
        """runtime.atomic's `open`: counts the writes of last.ckpt and injects the fault."""
        global saves
        f = open(file, mode, *args, **kwargs)
        if ".last.ckpt." not in str(file):
            return f
        saves += 1
        if kind == "fsize_after" and saves == params[0] + 1:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        return Slow(f) if kind == "slow_save" and saves == params[0] else f

    atomic.open = patched_open  # shadows the builtin in that module only

from vae_lightning.cli import main  # noqa: E402

main()
