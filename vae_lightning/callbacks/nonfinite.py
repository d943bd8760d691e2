"""Stop (or skip) a training step whose loss or gradients are NaN or infinite.

Registered by ``vae`` as ``nonfinite`` (``--nonfinite.max_skips 10``). Gradient clipping is
Lightning's own: ``trainer.gradient_clip_val`` (and ``gradient_clip_algorithm``) in YAML.
"""

from __future__ import annotations

import math
import os

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from vae_lightning.errors import UserError
from vae_lightning.runtime import compat


class NonFiniteLoss(UserError):
    """Training stopped because the loss or the gradients stopped being finite numbers."""


class NonFiniteGuard(Callback):
    """Stops (or skips) a step whose loss or gradients are NaN or infinite.

    Checks every optimizer step, after backward and before the weights change, that the loss
    and all gradients are finite. On the first bad step it saves the weights as they were (the
    last good state) to ``last.ckpt`` in the checkpoint folder and stops with a message naming
    the global step and the terms that went bad (``recon``, ``kl``, ``loss``, ``grad``). With
    ``max_skips`` > 0, bad steps are skipped instead (no weight or optimizer-state change) until
    that many have been skipped, then it stops as above.

    With ``precision: 16-mixed`` only the loss is checked: inf gradients are then the loss
    scaler's normal overflow signal, and it skips those steps itself.

    Cost: one device-to-host copy of a single bool per optimizer step. Reading the flag later
    (every n steps) would avoid that sync on GPUs, but a NaN would then reach the weights and the
    optimizer state before it is seen, and neither skipping nor saving the last good state would
    be possible.

    Args:
        max_skips: bad steps to skip before stopping (0: stop at the first).
        enabled: false turns the check off.
    """

    def __init__(self, max_skips: int = 0, enabled: bool = True) -> None:
        if max_skips < 0:
            raise ValueError(f"nonfinite.max_skips must be >= 0, got {max_skips}.")
        self.max_skips, self.enabled = max_skips, enabled
        self.skipped = 0
        self._loss: Tensor | None = None

    @override
    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        self._loss = loss.detach()

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer) -> None:
        if not self.enabled:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            grads = []  # 16-mixed: the GradScaler skips overflowing steps itself; check the loss only
        if self._all_finite(grads):
            return
        terms = self._bad_terms(trainer, grads)
        if self.skipped < self.max_skips:
            self.skipped += 1
            optimizer.zero_grad(set_to_none=True)  # torch optimizers leave parameters without grads alone
            rank_zero_warn(
                f"non-finite {', '.join(terms)} at global step {trainer.global_step}; skipped this step "
                f"({self.skipped} of nonfinite.max_skips={self.max_skips})."
            )
            pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
            return
        raise NonFiniteLoss(self._stop_message(trainer, terms))

    def _all_finite(self, grads: list[Tensor]) -> bool:
        """One bool for the loss and all gradients, from torch's fused non-finite check (the kernel
        ``GradScaler`` uses): one pass per device and dtype instead of a kernel per tensor, and
        exact (a per-tensor sum can overflow on huge finite values). It multiplies the gradients by
        1 in place, which leaves every value bitwise as it was. Timings: docs/benchmarks.md."""
        groups: dict[tuple, list[Tensor]] = {}
        for g in grads:
            groups.setdefault((g.device, g.dtype), []).append(g.detach())
        flags = [] if self._loss is None else [(~self._loss.detach().isfinite()).any().float()]
        for (device, _), group in groups.items():
            found = torch.zeros((), device=device)
            torch._amp_foreach_non_finite_check_and_unscale_(group, found, torch.ones((), device=device))
            flags.append(found)
        return not flags or not bool(torch.stack([f.to(flags[0].device) for f in flags]).any())

    def _bad_terms(self, trainer: Trainer, grads: list[Tensor]) -> list[str]:
        terms = []
        for name in ("recon", "kl"):  # what the model logged for this step, where it is known
            value = _logged(trainer, f"train/{name}")
            if value is not None and not math.isfinite(value):
                terms.append(f"{name}={value}")
        if self._loss is not None and not bool(self._loss.isfinite().all()):
            terms.append(f"loss={self._loss.float().item()}")
        if not all(bool(g.isfinite().all()) for g in grads):
            terms.append("grad")
        return terms or ["loss"]

    def _stop_message(self, trainer: Trainer, terms: list[str]) -> str:
        saved = ""
        ckpt = trainer.checkpoint_callback
        dirpath = getattr(ckpt, "dirpath", None)
        if dirpath:
            path = os.path.join(dirpath, "last.ckpt")
            trainer.save_checkpoint(path)  # the weights have not been touched by the bad step
            saved = f"; saved the last good state (global step {trainer.global_step}) to {path}"
        skipped = f" after skipping {self.skipped} bad steps" if self.skipped else ""
        return (
            f"training stopped at global step {trainer.global_step}{skipped}: non-finite {', '.join(terms)}{saved}; "
            "lower the learning rate, set trainer.gradient_clip_val, or allow skips with --nonfinite.max_skips N."
        )

    @override
    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = state_dict.get("skipped", 0)


def _logged(trainer: Trainer, key: str) -> float | None:
    """The value the module logged under ``key`` in the current step (private Lightning state,
    read only after a failure; None when it is not there)."""
    try:
        for name, metric in compat.logged_values(trainer):
            if name.endswith("." + key):
                return float(metric.value)
    except Exception:
        return None
    return None
