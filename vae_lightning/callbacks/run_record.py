"""Per-run records that need no logger: ``history.csv`` and ``summary.json`` beside the checkpoints.

``vae compare`` reads these, so a study can be compared offline whatever logger it used (W&B
offline, CSV, TensorBoard or none). Both files live in the run's checkpoint folder
(``<default_root_dir>/checkpoints/version_N/``, ``slurm-<job id>/`` in a SLURM job), next to
``vae_config.yaml``:

- ``history.csv``: one row per logged point: ``step`` (optimizer steps), ``wall_time`` (seconds
  of training since the fit started, resumes included), and the metrics logged then: ``train/*``
  every ``log_every_n_steps`` and ``val/*`` at each validation (empty cells elsewhere).
- ``summary.json``: ``status`` (``running`` | ``finished`` | ``failed`` | ``preempted``: saved for a
  requeued SLURM job, until it restarts), the last ``step`` and
  ``wall_time``, the last value of every metric, ``best/val/elbo`` (max) and ``best/val/loss``
  (min), and, after ``vae test|validate --ckpt_path X``, the ``test/*`` (``val/*``) values of X
  with ``evaluated/test`` = {``ckpt``, ``step``} in the summary of X's own folder.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from vae_lightning.runtime.records import read_history, read_summary, write_history, write_summary

log = logging.getLogger(__name__)


def _scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if not key.startswith(prefix):
            continue
        try:
            out[key] = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError, RuntimeError):  # a non-scalar tensor: not a column
            continue
    return out


def _ckpt_step(path: str) -> int | None:
    """The optimizer step a checkpoint was saved at (an evaluation does not restore the loops)."""
    from vae_lightning.runtime.checkpoint import read_checkpoint  # memory-mapped: the weights are not read

    step = read_checkpoint(path).get("global_step")
    return int(step) if step is not None else None


def _preempted(trainer: Trainer) -> bool:
    """Whether ``SLURMPreemption`` saved this fit for a requeued job."""
    return any(getattr(cb, "preempted", False) for cb in trainer.callbacks)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


class RunRecord(Callback):
    """Writes history.csv and summary.json beside the checkpoints, whatever the logger.

    Writes ``history.csv`` and ``summary.json`` (see the module docstring) on rank zero.

    Work happens only when Lightning writes metrics (every ``log_every_n_steps`` training steps,
    each validation, the end of a test), never on the other steps. Each write replaces the whole
    file atomically. A resumed fit drops the rows after its checkpoint's step, so a requeued
    job does not repeat them, and its ``wall_time`` continues from the checkpoint's.

    Args:
        enabled: False writes nothing (``--record.enabled false``), e.g. to evaluate a checkpoint
            in a folder that must stay as it is.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._folder: Path | None = None
        self._rows: list[dict[str, float]] = []
        self._summary: dict[str, Any] = {}
        self._start = 0.0
        self._offset = 0.0  # seconds of training before this process (restored from the checkpoint)

    # ---- state carried in checkpoints ----------------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        return {"wall_time": self._elapsed()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._offset = float(state_dict.get("wall_time", 0.0))

    def _elapsed(self) -> float:
        return self._offset + (time.monotonic() - self._start if self._start else 0.0)

    # ---- fit -----------------------------------------------------------------------------------
    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or not self.enabled:
            return
        ckpt = trainer.checkpoint_callback
        self._folder = Path(getattr(ckpt, "dirpath", None) or trainer.default_root_dir)
        self._start = time.monotonic()

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._folder is None:
            return
        # the checkpoint is restored by now: keep the rows up to its step (a requeue repeats the rest)
        step = trainer.global_step
        self._rows = [r for r in read_history(self._folder) if r.get("step", 0) <= step]
        old = read_summary(self._folder)
        self._summary = {k: v for k, v in old.items() if k.startswith(("test/", "evaluated/"))}
        for row in self._rows:
            self._summarize(row)
        self._summary.update(status="running", step=step, wall_time=self._elapsed())
        self._write()

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if self._folder is None or not pl_module.log_now():
            return  # the steps on which the model logs train/* (and Lightning writes them)
        self._add(trainer, "train/")

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._folder is None:
            return
        status = "preempted" if _preempted(trainer) else "finished"
        self._summary.update(status=status, step=trainer.global_step, wall_time=self._elapsed())
        self._write()

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self._folder is None:
            return
        if _preempted(trainer):  # saved and requeued: what comes after (SLURM's SIGTERM) is no failure
            self._summary.update(status="preempted", wall_time=self._elapsed())
        else:
            self._summary.update(status="failed", error=type(exception).__name__, wall_time=self._elapsed())
        self._write()

    def _add(self, trainer: Trainer, prefix: str) -> None:
        values = _scalars(trainer.callback_metrics, prefix)
        if not values:
            return
        row = {"step": float(trainer.global_step), "wall_time": round(self._elapsed(), 3), **values}
        if self._rows and self._rows[-1]["step"] == row["step"]:
            self._rows[-1].update(row)  # train and val metrics of the same step share a row
        else:
            self._rows.append(row)
        self._summarize(row)
        self._write()

    def _summarize(self, row: dict[str, float]) -> None:
        s = self._summary
        s.update({k: v for k, v in row.items() if k not in ("step", "wall_time")})
        s["step"], s["wall_time"] = int(row["step"]), row["wall_time"]
        for key, better in (("val/elbo", max), ("val/loss", min)):
            if _finite(row.get(key)):
                old = s.get(f"best/{key}")
                s[f"best/{key}"] = row[key] if old is None else better(old, row[key])

    def _write(self) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        write_history(self._folder, self._rows)
        write_summary(self._folder, self._summary)

    # ---- vae test / validate --ckpt_path X ------------------------------------------------------
    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._evaluated(trainer, "test")

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._evaluated(trainer, "val")
        elif self._folder is not None and not trainer.sanity_checking:
            self._add(trainer, "val/")

    def _evaluated(self, trainer: Trainer, prefix: str) -> None:
        ckpt = trainer.ckpt_path
        if not self.enabled or not trainer.is_global_zero or not ckpt or "://" in str(ckpt) or not os.path.isfile(ckpt):
            return  # an in-memory model or a remote file: no run folder to update
        values = _scalars(trainer.callback_metrics, f"{prefix}/")
        if not values:
            return
        folder = Path(ckpt).resolve().parent
        summary = read_summary(folder)
        summary.setdefault("status", "finished")  # a folder from before these records
        summary.update(values)
        stage = "test" if prefix == "test" else "validate"
        summary[f"evaluated/{stage}"] = {"ckpt": Path(ckpt).name, "step": _ckpt_step(ckpt)}
        try:
            write_summary(folder, summary)
        except OSError as err:  # someone else's read-only run: the evaluation itself still counts
            log.warning(
                f"could not update {folder / 'summary.json'} ({err.strerror or err}); the {stage} "
                "numbers are only in the logger's run."
            )
