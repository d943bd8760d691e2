"""A bench-only Lightning callback: times the steady-state training steps of a real `vae fit`
run and writes them as JSON. Added from YAML by the bench (never by users):

    trainer:
      callbacks:
        - class_path: bench.throughput.Throughput
          init_args: {out: /tmp/fit.json, warmup: 30, steps: 300}

Only a clock read and a counter per step; on a GPU it waits for the device at the two ends of
the timed window, nothing else syncs or allocates.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Throughput(Callback):
    """Images/s over ``steps`` training steps after ``warmup`` steps, from the end of step
    ``warmup`` to the end of step ``warmup + steps`` (so every timed step is a whole iteration:
    fetch the batch, forward, backward, optimizer step, logging). Also records the wall-clock
    time of the first optimizer step and the peak RSS.

    Args:
        out: JSON file to write at the end of training.
        warmup: steps left out of the timing (allocator and autotuning warm-up, compilation).
        steps: steps timed.
    """

    def __init__(self, out: str, warmup: int = 30, steps: int = 300) -> None:
        self.out, self.warmup, self.steps = Path(out), warmup, steps
        self.done, self.images = 0, 0
        self.first_step_at = self.t0 = self.t1 = self.c0 = self.c1 = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.done += 1
        if self.done == 1:
            self.first_step_at = time.time()
        if self.done in (self.warmup, self.warmup + self.steps) and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # the window holds the GPU's work, not just its launch
        if self.done == self.warmup:
            self.t0, self.c0 = time.perf_counter(), time.process_time()
        elif self.warmup < self.done <= self.warmup + self.steps:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            self.images += x.shape[0]
            if self.done == self.warmup + self.steps:
                self.t1, self.c1 = time.perf_counter(), time.process_time()

    def on_train_end(self, trainer, pl_module) -> None:
        result = {
            "runner": "vae fit",
            "threads": torch.get_num_threads(),
            "first_step_at": self.first_step_at,
            "peak_rss_mb": peak_rss_mb(),
            "steps": self.done,
        }
        if self.t1 is not None:
            result.update(
                timed_steps=self.steps,
                seconds=self.t1 - self.t0,
                images_per_s=self.images / (self.t1 - self.t0),
                images_per_cpu_s=self.images / (self.c1 - self.c0),
            )
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(result))
