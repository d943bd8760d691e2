"""The one place where other libraries' console noise is filtered, by message; ``vae`` calls
``quiet()`` at its entry point, and the CLI calls ``without()``/``own_checkpoint_dir()`` where its
own choices cause a warning. ``VAE_DEBUG=1`` turns every filter off.

What a normal ``vae fit``/``test``/picture command then prints: the model summary, the progress
display, the metric table, and vae's own messages and warnings. Other warnings (deprecations
of our own, config hints such as Lightning's ``log_every_n_steps``) still show.

Checked against lightning 2.6.6, torch 2.14.1 and wandb 0.31.0; ``tests/test_use.py`` fails
when one of these messages comes back. The W&B filter goes through ``runtime.compat``.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: Python warnings from other libraries, as regexes on the start of the message
WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's own use of a torch API
    r"The `srun` command is available on your system but is not used",  # any run on a SLURM login node
    # EMAWeightAveraging in an evaluation's config: the model says which weights it uses (VAE._load_averaged)
    r"You're using the WeightAveraging callback, but loading a checkpoint outside the 'fit' stage",
)

#: LightningCLI's warning when ``args`` and ``sys.argv`` are both given; vae gives ``args`` itself
#: (the command line plus a run's saved config), so it is filtered only around that call
CLI_ARGS = r"LightningCLI's args parameter is intended to run from within Python"

#: Lightning's ModelCheckpoint warning, filtered only for the folder vae chose for a fit (new, or
#: the resumed run's own); a non-empty folder that a config names still warns
CHECKPOINT_DIR_NOT_EMPTY = "Checkpoint directory {} exists and is not empty."

#: Lightning's info lines (logging), as regexes searched in the message
LIGHTNING_INFO = (
    r"Tip: For seamless cloud logging",  # the litlogger advert
    r"^(GPU|TPU|HPU) available: ",  # hardware lines; `vae` checks the accelerator itself
    r"^Seed set to ",
    r"^`Trainer\(limit_\w+_batches=[^)]*\)` was configured so ",  # echoes the config; a refusal is one line
    r"^Found current_model_state in the checkpoint",  # EMAWeightAveraging's resume; VAE._load_averaged says more
    r"^You're using the WeightAveraging callback, but saving a checkpoint outside the 'fit' stage",
)
LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
    "lightning.pytorch.utilities.seed",
)

#: wandb.termwarn lines printed with repeat=False; wandb skips a message it has printed before.
#: The anonymous setting comes from Lightning's WandbLogger, which always passes it.
WANDB_ONCE = ("The anonymous setting has no effect and will be removed in a future version.",)


class _DropMessages(logging.Filter):
    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def debug() -> bool:
    """True when ``VAE_DEBUG`` is set: tracebacks and every library's messages."""
    return bool(os.environ.get("VAE_DEBUG"))


def quiet(wandb: bool = False) -> None:
    """Install the filters (idempotent). ``wandb``: also the W&B ones (imports wandb, ~1 s)."""
    if debug():
        return
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    drop = _DropMessages(LIGHTNING_INFO)
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(drop)
    if wandb:
        from vae_lightning.runtime import compat

        compat.wandb_skip_warnings(WANDB_ONCE)


@contextmanager
def without(pattern: str) -> Iterator[None]:
    """Within the block, drop the warnings whose message starts with ``pattern`` (a regex)."""
    with warnings.catch_warnings():
        if not debug():
            warnings.filterwarnings("ignore", message=pattern)
        yield


def own_checkpoint_dir(folder: str) -> None:
    """Drop Lightning's "not empty" warning for this one checkpoint folder (the path as
    ModelCheckpoint writes it: user-expanded, resolved)."""
    if debug():
        return
    path = os.path.realpath(os.path.expanduser(folder))
    warnings.filterwarnings("ignore", message=re.escape(CHECKPOINT_DIR_NOT_EMPTY.format(path)) + "$")


_RST_LITERAL = re.compile(r"``([^`]+)``")
_RST_ROLE = re.compile(r":(?:class|func|meth|mod|attr|obj):`~?([^`]+)`")


def plain(text: str) -> str:
    """Help text without reStructuredText markup: ``x`` and :class:`x` become x."""
    return _RST_ROLE.sub(r"\1", _RST_LITERAL.sub(r"\1", text))


def hyphenated(argv: list[str]) -> list[str]:
    """``argv`` of an argparse command with ``--image_size`` spelled ``--image-size`` (its help's
    spelling), so the LightningCLI habit of underscores works too. Dotted config keys
    (``--data.init_args.batch_size``) and everything after a bare ``--`` are left alone."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        name, eq, value = arg.partition("=")
        if name.startswith("--") and "_" in name and "." not in name:
            out[i] = name.replace("_", "-") + eq + value
    return out
