"""Stop (or skip) a training step whose loss or gradients are NaN or infinite, or whose gradient
norm exceeds a threshold (VDVAE's skip).

Registered by ``vae`` as ``nonfinite`` (``--nonfinite.max_skips 10``, ``--nonfinite.max_grad_norm
400``). Gradient clipping is Lightning's own: ``trainer.gradient_clip_val`` (and
``gradient_clip_algorithm``) in YAML; the norm checked here is the one before clipping.
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

    ``max_grad_norm``: a step whose gradients' total 2-norm (all parameters, before clipping)
    exceeds it is a bad step too, handled the same way: VDVAE's gradient skip (Child 2021), which
    keeps rare spikes out of the weights. Unlike VDVAE's, it cannot skip every update of a run
    that has gone bad without a word (VDVAE's issue #25): after ``max_skips`` skipped steps
    (counted over the whole run, resumes included) the fit stops with the one-line error, saving
    the last good state. With it set, ``train/grad_norm`` is logged on the steps that log.

    Cost: one device-to-host copy of a single bool per optimizer step. Reading the flag later
    (every n steps) would avoid that sync on GPUs, but a NaN would then reach the weights and the
    optimizer state before it is seen, and neither skipping nor saving the last good state would
    be possible.

    Args:
        max_skips: bad steps to skip before stopping (0: stop at the first).
        max_grad_norm: a gradient norm above which a step is skipped as bad; None: no such check.
        enabled: false turns the check off.
    """

    def __init__(self, max_skips: int = 0, max_grad_norm: float | None = None, enabled: bool = True) -> None:
        if max_skips < 0:
            raise UserError(f"nonfinite.max_skips must be >= 0, got {max_skips}.")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise UserError(f"nonfinite.max_grad_norm must be > 0 (or null), got {max_grad_norm}.")
        self.max_skips, self.max_grad_norm, self.enabled = max_skips, max_grad_norm, enabled
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
        if not self._all_finite(grads):
            what = "non-finite " + ", ".join(self._bad_terms(trainer, grads))
        else:
            what = self._norm_too_large(trainer, pl_module, optimizer)
            if what is None:
                return
        if self.skipped < self.max_skips:
            self.skipped += 1
            optimizer.zero_grad(set_to_none=True)  # torch optimizers leave parameters without grads alone
            rank_zero_warn(
                f"{what} at global step {trainer.global_step}; skipped this step "
                f"({self.skipped} of nonfinite.max_skips={self.max_skips})."
            )
            pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
            return
        raise NonFiniteLoss(self._stop_message(trainer, what))

    def _norm_too_large(self, trainer: Trainer, pl_module: LightningModule, optimizer) -> str | None:
        """``gradient norm … > nonfinite.max_grad_norm=…`` when this step's norm exceeds the
        threshold, else None; logs ``train/grad_norm``. Under 16-mixed an overflow (inf) is the
        scaler's to skip, not ours."""
        if self.max_grad_norm is None:
            return None
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return None
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        if compat.should_update_logs(trainer):
            pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        value = float(norm)  # one device-to-host copy
        if not math.isfinite(value) or value <= self.max_grad_norm:
            return None
        return f"gradient norm {value:.4g} > nonfinite.max_grad_norm={self.max_grad_norm:g}"

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
            compat.non_finite_check_(group, found, torch.ones((), device=device))
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

    def _stop_message(self, trainer: Trainer, what: str) -> str:
        saved = ""
        ckpt = trainer.checkpoint_callback
        dirpath = getattr(ckpt, "dirpath", None)
        if dirpath:
            path = os.path.join(dirpath, "last.ckpt")
            trainer.save_checkpoint(path)  # the weights have not been touched by the bad step
            saved = f"; saved the last good state (global step {trainer.global_step}) to {path}"
        skipped = f" after skipping {self.skipped} bad steps" if self.skipped else ""
        also = "raise --nonfinite.max_grad_norm, " if what.startswith("gradient norm") else ""
        return (
            f"training stopped at global step {trainer.global_step}{skipped}: {what}{saved}; "
            f"lower the learning rate, set trainer.gradient_clip_val, {also}"
            "or allow skips with --nonfinite.max_skips N."
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
    for name, metric in compat.logged_values(trainer):
        if name.endswith("." + key):
            try:
                return float(metric.value)
            except (TypeError, ValueError, RuntimeError):  # not one number (a tensor of several values)
                return None
    return None
