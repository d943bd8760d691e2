"""VAE variants. Each is a small subclass of ``VAE`` that overrides ``objective(f, step, n)``:
it reads what it needs from the batch's ``ForwardRecord`` f (x, mu, logvar, z, out, recon,
kl_dims; kl_dims is (B, 1), a Monte Carlo KL, under a learned prior), the optimizer step and
the training-set size n, and returns the loss plus the extra terms it wants logged (named in
its ``terms``). The KL schedule w(step) multiplies the regularizer of every variant.
"""

from __future__ import annotations

import math

from torch import Tensor
from typing_extensions import override

from vae_lightning.models import VAE, ForwardRecord, Objective
from vae_lightning.objectives import posterior


class BetaVAE(VAE):
    """β-VAE (Higgins et al. 2017): loss = recon + β·kl. With ``c_max`` set, the capacity form of
    Burgess et al. 2018 (their "AnnealedVAE"): loss = recon + γ·|kl − C|, C rising linearly from
    0 to ``c_max`` nats over ``c_steps`` optimizer steps. The KL schedule multiplies either term.

    Args:
        beta: weight β ≥ 0 on the KL (plain form).
        c_max: final capacity C in nats; None for the plain form.
        c_steps: optimizer steps over which C rises to ``c_max``.
        gamma: weight γ ≥ 0 on |kl − C| (capacity form).
    """

    terms = ("kl_weight", "capacity")

    def __init__(
        self, *args, beta: float = 4.0, c_max: float | None = None, c_steps: int = 100_000, gamma: float = 1000.0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        for name, value in (("beta", beta), ("gamma", gamma), ("c_max", c_max or 0.0)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        if c_steps < 1:
            raise ValueError(f"c_steps must be >= 1, got {c_steps}.")
        self.beta, self.c_max, self.c_steps, self.gamma = beta, c_max, c_steps, gamma

    def capacity(self, step: int) -> float:
        """C(step) in nats: linear from 0 to c_max over c_steps, then constant."""
        return (self.c_max or 0.0) * min(step / self.c_steps, 1.0)

    @override
    def objective(self, f: ForwardRecord, step: int, dataset_size: int | None) -> Objective:
        weight, kl = self.kl_schedule(step), f.kl_dims.sum(1).mean()
        if self.c_max is None:
            return Objective(f.recon.mean() + weight * (self.beta * kl), {"kl_weight": weight * self.beta})
        capacity = self.capacity(step)
        loss = f.recon.mean() + weight * (self.gamma * (kl - capacity).abs())
        return Objective(loss, {"kl_weight": weight * self.gamma, "capacity": capacity})


class FreeBitsVAE(VAE):
    """Free-bits VAE (Kingma et al. 2016, "Improved variational inference with inverse
    autoregressive flow", eq. 15): the KL term is Σ_g max(λ, E_batch[KL_g]) over groups g of
    latent dimensions, so no group is pushed below λ nats. ``kl`` and ``elbo`` are still logged
    with the true KL.

    Args:
        free_bits: λ ≥ 0, in nats per group.
        group_size: latent dimensions per group (1: one group per dimension); must divide D.
    """

    needs_kl_per_dim = True

    def __init__(self, *args, free_bits: float = 0.25, group_size: int = 1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if free_bits < 0:
            raise ValueError(f"free_bits must be >= 0 nats, got {free_bits}.")
        if group_size < 1 or self.latent_dim % group_size:
            raise ValueError(f"group_size must be >= 1 and divide latent_dim={self.latent_dim}, got {group_size}.")
        self.free_bits, self.group_size = free_bits, group_size

    def free_bits_kl(self, kl_dims: Tensor) -> Tensor:
        """Σ_g max(λ, batch-mean KL of group g), from the per-dimension KL (B, D); a scalar in nats."""
        per_group = kl_dims.view(kl_dims.shape[0], -1, self.group_size).sum(2).mean(0)  # (G,)
        return per_group.clamp(min=self.free_bits).sum()

    @override
    def objective(self, f: ForwardRecord, step: int, dataset_size: int | None) -> Objective:
        weight = self.kl_schedule(step)
        return Objective(f.recon.mean() + weight * self.free_bits_kl(f.kl_dims), {"kl_weight": weight})


class BetaTCVAE(VAE):
    """β-TCVAE (Chen et al. 2018, "Isolating sources of disentanglement in VAEs"): the KL is split
    into index-code MI, total correlation and dimension-wise KL, and the TC gets its own weight:
    loss = recon + w(step)·(α·index_mi + β·tc + γ·dim_kl), each term in nats per example and
    logged under its name. q(z) and its marginals q(z_u) at each z_i are estimated by
    minibatch-weighted sampling over the batch of M: log q(z_i) ≈ logsumexp_j log q(z_i|x_j) − log M.
    Chen et al. write the normaliser as log(N·M); that shifts log q(z) by −log N, a constant that
    changes no gradient but offsets the logged terms (tc by (D − 1)·log N), so we use log M.

    Args:
        alpha: weight on the index-code mutual information I_q(x; z).
        beta: weight on the total correlation KL(q(z) || Π_u q(z_u)).
        gamma: weight on the dimension-wise KL Σ_u KL(q(z_u) || p(z_u)); under a learned prior,
            which does not factorise, this term is KL(Π_u q(z_u) || p(z)), with the prior's density.
    """

    terms = ("kl_weight", "index_mi", "tc", "dim_kl")

    def __init__(self, *args, alpha: float = 1.0, beta: float = 6.0, gamma: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        self.alpha, self.beta, self.gamma = alpha, beta, gamma

    @override
    def objective(self, f: ForwardRecord, step: int, dataset_size: int | None) -> Objective:
        log_m = math.log(f.z.shape[0])
        log_q_zx = posterior(f.mu, f.logvar).log_prob(f.z).sum(1)  # (B,)
        log_q_pairs = posterior(f.mu.unsqueeze(0), f.logvar.unsqueeze(0)).log_prob(f.z.unsqueeze(1))  # (B, B, D)
        log_qz = log_q_pairs.sum(2).logsumexp(1) - log_m  # (B,): log q(z_i)
        log_prod_qzu = (log_q_pairs.logsumexp(1) - log_m).sum(1)  # (B,): Σ_u log q(z_iu)
        log_pz = self.prior.log_prob(f.z)  # (B,)
        mi, tc = (log_q_zx - log_qz).mean(), (log_qz - log_prod_qzu).mean()
        dim_kl = (log_prod_qzu - log_pz).mean()
        weight = self.kl_schedule(step)
        loss = f.recon.mean() + weight * (self.alpha * mi + self.beta * tc + self.gamma * dim_kl)
        return Objective(loss, {"kl_weight": weight, "index_mi": mi, "tc": tc, "dim_kl": dim_kl})
