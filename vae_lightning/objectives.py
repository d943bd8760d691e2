"""KL terms, KL-weight schedules and ``Objective``, the loss a variant returns.

Every quantity is in nats. ``kl`` of shape (B, D) is the per-example, per-latent-dimension
KL(q(z|x) || p(z)); summing over D gives the per-example KL used in the ELBO.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Normal

from vae_lightning.errors import UserError

# log σ² is clamped to [LOGVAR_MIN, LOGVAR_MAX] before exp(): an encoder that drifts further
# would overflow exp() in bf16/fp16 and turn the KL into inf. σ² from e^-30 to e^20 covers
# any σ a VAE needs.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def posterior(mu: Tensor, logvar: Tensor) -> Normal:
    """Diagonal Gaussian q(z|x) = N(mu, diag exp(logvar)), evaluated in float32."""
    logvar = logvar.float().clamp(LOGVAR_MIN, LOGVAR_MAX)
    return Normal(mu.float(), torch.exp(0.5 * logvar))


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per dimension, shape (B, D), in nats (closed form,
    Kingma & Welling 2014, appendix B): ½ (σ² + μ² − 1 − log σ²).

    Written out rather than through ``torch.distributions.kl_divergence``, whose lookup of the
    registered pair breaks a ``torch.compile`` graph. The operations are torch's own for two
    Normals with the prior's loc 0 and scale 1 left out (x − 0 and x / 1 are exact), so values
    and gradients are bitwise the same (``tests/test_objectives.py``)."""
    q = posterior(mu, logvar)
    var_ratio = q.scale.pow(2)
    return 0.5 * (var_ratio + q.loc.pow(2) - 1 - var_ratio.log())


def gaussian_kl_pair(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) per dimension, in nats, float32, of the
    inputs' shape: ½ (log σ_p² − log σ_q² + (σ_q² + (μ_q − μ_p)²) / σ_p² − 1). The KL of one group
    of a hierarchical VAE, whose prior is a Gaussian of its own; log variances are clamped as in
    ``posterior``."""
    lq = logvar_q.float().clamp(LOGVAR_MIN, LOGVAR_MAX)
    lp = logvar_p.float().clamp(LOGVAR_MIN, LOGVAR_MAX)
    return 0.5 * (lp - lq + (lq.exp() + (mu_q.float() - mu_p.float()).pow(2)) * torch.exp(-lp) - 1)


class KLSchedule(metaclass=ABCMeta):
    """Base class of the KL-weight schedules.

    Weight w(step) that multiplies the KL term of the objective; the type of
    ``model.init_args.kl_schedule`` (abstract, so help lists only its subclasses)."""

    @abstractmethod
    def __call__(self, step: int) -> float:
        """The weight at optimizer step ``step``."""


class Constant(KLSchedule):
    """A constant KL weight.

    w(step) = ``weight`` at every step."""

    def __init__(self, weight: float = 1.0) -> None:
        if weight < 0:
            raise UserError(f"Constant(weight={weight}): the KL weight must be >= 0.")
        self.weight = weight

    def __call__(self, step: int) -> float:
        return self.weight


class LinearWarmup(KLSchedule):
    """A KL weight that rises linearly, then stays.

    w rises linearly from ``start`` to ``end`` over ``steps`` optimizer steps, then stays."""

    def __init__(self, steps: int = 10_000, start: float = 0.0, end: float = 1.0) -> None:
        if steps < 1:
            raise UserError(f"LinearWarmup(steps={steps}): steps must be >= 1.")
        if start < 0 or end < 0:
            raise UserError(f"LinearWarmup(start={start}, end={end}): weights must be >= 0.")
        self.steps, self.start, self.end = steps, start, end

    def __call__(self, step: int) -> float:
        t = min(step / self.steps, 1.0)
        return self.start + t * (self.end - self.start)


class Cyclical(KLSchedule):
    """Cyclical KL annealing.

    Cyclical annealing (Fu et al. 2019, NAACL): ``n_cycles`` cycles over ``total_steps``.

    Within each cycle w rises linearly from 0 to ``max_weight`` during the first ``ratio`` of
    the cycle and stays at ``max_weight`` for the rest. After ``total_steps`` w = ``max_weight``.
    """

    def __init__(
        self, total_steps: int = 10_000, n_cycles: int = 4, ratio: float = 0.5, max_weight: float = 1.0
    ) -> None:
        if total_steps < 1 or n_cycles < 1:
            raise UserError(f"Cyclical(total_steps={total_steps}, n_cycles={n_cycles}): both must be >= 1.")
        if not 0 < ratio <= 1:
            raise UserError(f"Cyclical(ratio={ratio}): ratio must be in (0, 1].")
        self.total_steps, self.n_cycles, self.ratio, self.max_weight = total_steps, n_cycles, ratio, max_weight

    def __call__(self, step: int) -> float:
        if step >= self.total_steps:
            return self.max_weight
        period = self.total_steps / self.n_cycles
        phase = (step % period) / period  # position within the cycle, in [0, 1)
        return self.max_weight * min(phase / self.ratio, 1.0)


class Objective(NamedTuple):
    """A variant's answer: the scalar loss to minimise, and extra scalar terms to log by name."""

    loss: Tensor
    terms: dict[str, Tensor | float]
