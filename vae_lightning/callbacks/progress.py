"""``ProgressDisplay``: the progress shown by ``vae``, cheap at any step rate.

Lightning's own bars redraw on every step; on a model whose step takes about a millisecond that
redraw costs as much as the step, and a SLURM ``.out`` file fills with thousands of bar frames
(docs/benchmarks.md). Here a step costs a clock read; the display is drawn only when its
interval has passed:

- in a terminal: a bar, redrawn at most every ``refresh_s`` seconds;
- when stdout is not a terminal (a pipe, a file) or under SLURM: one plain line every
  ``every_s`` seconds with the step, images/s, the loss and the ETA, and one per validation.

``vae`` adds it unless ``trainer.callbacks`` already holds a progress bar (Lightning's
``TQDMProgressBar`` or this one with other settings) or ``trainer.enable_progress_bar`` is false.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from typing_extensions import override

from vae_lightning.data.base import images
from vae_lightning.errors import UserError

MODES = ("auto", "bar", "lines")


def clock() -> float:
    """Seconds on a monotonic clock (a module function, so tests can drive the display)."""
    return time.monotonic()


def duration(seconds: float) -> str:
    """``h:mm:ss`` for a number of seconds; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class ProgressDisplay(ProgressBar):
    """Training progress: a bar in a terminal, plain status lines elsewhere (rank zero only).

    Args:
        refresh_s: in a terminal, the least time between two redraws of the bar, in seconds.
        every_s: outside a terminal or under SLURM, seconds between two status lines.
        mode: ``auto`` (a bar when stdout is a terminal and not under SLURM, else lines),
            ``bar`` or ``lines``.
    """

    def __init__(self, refresh_s: float = 0.25, every_s: float = 30.0, mode: str = "auto") -> None:
        super().__init__()
        if mode not in MODES:
            raise UserError(f"ProgressDisplay mode must be one of {', '.join(MODES)}, got {mode!r}.")
        if refresh_s <= 0 or every_s <= 0:
            raise UserError(f"ProgressDisplay needs refresh_s > 0 and every_s > 0, got {refresh_s} and {every_s}.")
        self.refresh_s, self.every_s, self.mode = refresh_s, every_s, mode
        self._enabled = True
        self._bar = False  # decided in setup, from the stream
        self._loss = None  # the last step's loss tensor; read (a host sync) only when drawn
        self._next_draw = 0.0
        self._t0 = self._step0 = self._images = 0
        self._total: float = math.inf
        self._width = 100

    # ---- Lightning's ProgressBar interface ------------------------------------------------
    @override
    def disable(self) -> None:
        self._enabled = False

    @override
    def enable(self) -> None:
        self._enabled = True

    @override
    def print(self, *args, **kwargs) -> None:
        if self._bar:
            self._write("\r" + " " * self._width + "\r")
        print(*args, **kwargs)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        stream = sys.stdout
        tty = getattr(stream, "isatty", lambda: False)()
        self._bar = self.mode == "bar" or (self.mode == "auto" and tty and "SLURM_JOB_ID" not in os.environ)
        self._width = shutil.get_terminal_size((100, 24)).columns - 1 if tty else 100

    # ---- training ---------------------------------------------------------------------------
    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._total = trainer.max_steps if trainer.max_steps > 0 else float(trainer.estimated_stepping_batches)
        self._t0, self._step0, self._images, self._next_draw = None, trainer.global_step, 0, 0.0

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if not self._enabled:
            return
        self._loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        now = clock()
        if self._t0 is None:  # rates count from the end of the first step: start-up and compilation left out
            self._t0, self._step0 = now, trainer.global_step
        else:
            self._images += len(images(batch))
        if now >= self._next_draw:
            self._next_draw = now + (self.refresh_s if self._bar else self.every_s)
            self._show(self._train_text(trainer, now))

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._enabled and self._t0 is not None:
            self._show(self._train_text(trainer, clock()))
            if self._bar:
                self._write("\n")

    def _train_text(self, trainer: Trainer, now: float) -> str:
        step, elapsed = trainer.global_step, now - self._t0
        rate = (step - self._step0) / elapsed if elapsed > 0 else math.nan
        eta = (self._total - step) / rate if rate > 0 else math.nan
        loss = "?" if self._loss is None else f"{float(self._loss):.4g}"
        total = "?" if not math.isfinite(self._total) else f"{int(self._total)}"
        per_s = f"{self._images / elapsed:.0f}" if elapsed > 0 else "?"
        stats = f"{per_s} img/s, loss {loss}, ETA {duration(eta)}"
        if not self._bar:
            return f"step {step}/{total} | {stats}"
        done = step / self._total if math.isfinite(self._total) and self._total > 0 else 0.0
        head, tail = f"Epoch {trainer.current_epoch} {100 * done:3.0f}%|", f"| {step}/{total} [{stats}]"
        room = max(self._width - len(head) - len(tail), 10)
        filled = int(room * min(done, 1.0))
        return head + "█" * filled + " " * (room - filled) + tail

    # ---- validation, test and prediction ---------------------------------------------------
    def _eval_batch(self, description: str, batch_idx: int, total) -> None:
        now = clock()
        if self._enabled and self._bar and now >= self._next_draw:
            self._next_draw = now + self.refresh_s
            total = "?" if not math.isfinite(total) else int(total)
            self._show(f"{description} {batch_idx + 1}/{total}")

    @override
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        sanity = trainer.sanity_checking
        totals = trainer.num_sanity_val_batches if sanity else trainer.num_val_batches
        description = self.sanity_check_description if sanity else self.validation_description
        self._eval_batch(description, batch_idx, totals[dataloader_idx])

    @override
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        self._eval_batch(self.test_description, batch_idx, trainer.num_test_batches[dataloader_idx])

    @override
    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        self._eval_batch(self.predict_description, batch_idx, trainer.num_predict_batches[dataloader_idx])

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._enabled or trainer.sanity_checking:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if k in ("val/loss", "val/elbo", "val/kl"))
        self.print(f"validation at step {trainer.global_step}: {shown or 'done'}", flush=True)
        self._next_draw = 0.0  # the training display comes back at the next step

    # ---- output ---------------------------------------------------------------------------
    def _show(self, text: str) -> None:
        self._write("\r" + text.ljust(self._width) if self._bar else text + "\n")

    def _write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
