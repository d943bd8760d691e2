"""A SLURM requeue signal (USR1) that arrives while ``vae`` is still starting up.

Python's default action for USR1 is to end the process, and the trainer's handlers exist only
seconds after start-up (imports, data, model). A USR1 in that window used to kill the task: SLURM
saw exit code 138 (128 + 10) and failed the job. ``catch()``, called first thing by the ``vae``
entry point inside a SLURM job, installs a handler that only records the signal;
``SLURMPreemption`` replaces it in ``setup`` and acts on a recorded signal at the first step.
Torch-free: it runs before the heavy imports.
"""

from __future__ import annotations

import signal

from vae_lightning.runtime.slurm import in_slurm_job

_received: list[int] = []  # the signals that came before a trainer took them over


def _record(signum, frame) -> None:
    _received.append(signum)


def catch() -> None:
    """Inside a SLURM job, record USR1 from now on instead of dying of it."""
    if in_slurm_job() and signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGUSR1, _record)


def installed() -> bool:
    """True while USR1 goes to the start-up recorder."""
    return signal.getsignal(signal.SIGUSR1) is _record


def take() -> bool:
    """Whether USR1 came during start-up; forgets it, so that it is acted on once."""
    came = bool(_received)
    _received.clear()
    return came


def release() -> None:
    """USR1 back to its default action, where no trainer will act on it (``auto_requeue: false``)."""
    if installed():
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
