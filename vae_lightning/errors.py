"""Errors that are the user's to fix (config values, files, checkpoints).

``vae`` prints them as one line, ``vae: error: <message>``, and exits with status 2; any other
exception is a bug and keeps its traceback. Set ``VAE_DEBUG=1`` to see tracebacks for these too.

The one convention for a bad argument: every constructor of the package (models, variants, nets,
likelihoods, schedules, data modules, callbacks) refuses a value with a ``UserError``, a
``ValueError`` for Python callers; ``cli/explain.py`` passes its sentence through as it is.
"""


class UserError(ValueError):
    """A bad value, file or command that the user can fix; the message says how."""


class Interrupted(Exception):
    """A signal (SIGTERM, USR1) stopped a command midway; ``vae`` prints the message as one line
    and exits with 128 + the signal's number, as a shell reports a process the signal ended."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
