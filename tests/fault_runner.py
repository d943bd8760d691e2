"""`vae` with a fault injected, for the fault tests (run as a script in a subprocess).

VAE_FAULT selects the fault; the patches apply in every process, DDP workers included:
  crash_rank:R:S   rank R raises RuntimeError at global step S
  slow_save:N      the N-th checkpoint save writes half its bytes, touches <file>.writing, sleeps
  fsize_after:N    after N checkpoint saves, files may grow to 1 kB only (as on a full disk)
"""

import os
import resource
import signal
import sys
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
    import torch

    from vae_lightning import checkpoint_io

    saves = 0
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        global saves
        saves += 1
        if kind == "fsize_after" and saves == params[0] + 1:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        if kind == "slow_save" and saves == params[0]:
            import io

            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            Path(f.name).with_suffix(".writing").touch()
            time.sleep(600)
        return real_save(obj, f, *args, **kwargs)

    # the module's name `torch` now points to a shim, so only checkpoint writes are patched
    checkpoint_io.torch = type("torch_shim", (), {"save": staticmethod(save), "load": torch.load})

from vae_lightning.cli import main  # noqa: E402

main(sys.argv[1:])
