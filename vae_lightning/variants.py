"""VAE variants. Each is a small subclass of ``VAE`` that overrides ``objective(f, step, n)``:
it reads what it needs from the batch's ``ForwardRecord`` f (x, mu, logvar, z, out, recon,
kl_dims; kl_dims is (B, 1), a Monte Carlo KL, under a learned prior), the optimizer step and
the training-set size n, and returns the loss plus the extra terms it wants logged (named in
its ``terms``). The KL schedule w(step) multiplies the regularizer of every variant (IWAE,
whose bound has no separate regularizer, refuses one). AnnealedVAE (Burgess et al. 2018) is
``BetaVAE`` with ``c_max`` set.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from typing_extensions import override

from vae_lightning.errors import UserError
from vae_lightning.evaluation.metrics import iw_log_weights, record_log_weight
from vae_lightning.models import VAE, ForwardRecord
from vae_lightning.objectives import Constant, Objective, posterior


class BetaVAE(VAE):
    """β-VAE, plain (β·kl) or in the capacity form (γ·|kl − C|, the AnnealedVAE).

    β-VAE (Higgins et al. 2017): loss = recon + β·kl. With ``c_max`` set, the capacity form of
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
        self,
        *args,
        beta: float = 4.0,
        c_max: float | None = None,
        c_steps: int = 100_000,
        gamma: float = 1000.0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        for name, value in (("beta", beta), ("gamma", gamma), ("c_max", c_max or 0.0)):
            if value < 0:
                raise UserError(f"{name} must be >= 0, got {value}.")
        if c_steps < 1:
            raise UserError(f"c_steps must be >= 1, got {c_steps}.")
        self.beta, self.c_max, self.c_steps, self.gamma = beta, c_max, c_steps, gamma

    def capacity(self, step: int) -> float:
        """C(step) in nats: linear from 0 to c_max over c_steps, then constant."""
        return (self.c_max or 0.0) * min(step / self.c_steps, 1.0)

    @override
    def objective(self, f: ForwardRecord, step: int, dataset_size: int | None) -> Objective:
        weight, kl = self.kl_schedule(step), f.kl.mean()
        if self.c_max is None:
            return Objective(f.recon.mean() + weight * (self.beta * kl), {"kl_weight": weight * self.beta})
        capacity = self.capacity(step)
        loss = f.recon.mean() + weight * (self.gamma * (kl - capacity).abs())
        return Objective(loss, {"kl_weight": weight * self.gamma, "capacity": capacity})


class FreeBitsVAE(VAE):
    """Free-bits VAE: no group of latent dimensions is pushed below λ nats of KL.

    Free-bits VAE (Kingma et al. 2016, "Improved variational inference with inverse
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
            raise UserError(f"free_bits must be >= 0 nats, got {free_bits}.")
        if group_size < 1 or self.latent_dim % group_size:
            raise UserError(f"group_size must be >= 1 and divide latent_dim={self.latent_dim}, got {group_size}.")
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
    """β-TCVAE: the KL split into index-code MI, total correlation and dimension-wise KL.

    β-TCVAE (Chen et al. 2018, "Isolating sources of disentanglement in VAEs"): the KL is split
    into index-code MI, total correlation and dimension-wise KL, and the TC gets its own weight:
    loss = recon + w(step)·(α·index_mi + β·tc + γ·dim_kl), each term in nats per example and
    logged under its name. q(z) and its marginals q(z_u) at each z_i of a batch of M are
    estimated from the M posteriors of the batch, log q(z_i) ≈ logsumexp_j (log W_ij + log q(z_i|x_j)):

    - ``mws``, minibatch-weighted sampling: W_ij = 1/M. Chen et al. write the normaliser as
      log(N·M); that shifts log q(z) by −log N, a constant that changes no gradient but offsets
      the logged terms (tc by (D − 1)·log N), so we use log M, and N is not needed.
    - ``mss``, minibatch-stratified sampling (Chen et al., appendix C.2), for a training set of
      N ≥ M examples: W_ii = 1/N for the example's own posterior, (N − M + 1)/(N·(M − 1)) for one
      other (j = i + 1 mod M), 1/(M − 1) for the rest; each row sums to 1, so the estimate of
      q(z_i) is unbiased. N is the data module's ``num_train``.

    A batch of one (M = 1: the last, partial batch of a validation or test split whose size
    leaves a remainder of 1; training drops partial batches) has no other posterior to weight, and
    ``mss``'s weights are undefined there (they divide by M − 1): both estimators then use W = 1,
    i.e. q(z_i) ≈ q(z_i|x_i), so that batch's ``index_mi`` and ``tc`` are 0 and its ``dim_kl`` is
    its one-sample KL. The split's means weight it by 1/(split size).

    Either way mi + tc + dim_kl is the one-sample KL E[log q(z|x) − log p(z)] of the batch.

    Args:
        alpha: weight on the index-code mutual information I_q(x; z).
        beta: weight on the total correlation KL(q(z) || Π_u q(z_u)).
        gamma: weight on the dimension-wise KL Σ_u KL(q(z_u) || p(z_u)); under a learned prior,
            which does not factorise, this term is KL(Π_u q(z_u) || p(z)), with the prior's density.
        estimator: ``mws`` or ``mss`` (above).
    """

    terms = ("kl_weight", "index_mi", "tc", "dim_kl")

    def __init__(
        self, *args, alpha: float = 1.0, beta: float = 6.0, gamma: float = 1.0, estimator: str = "mws", **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if value < 0:
                raise UserError(f"{name} must be >= 0, got {value}.")
        if estimator not in ("mws", "mss"):
            raise UserError(f"model.init_args.estimator must be 'mws' or 'mss', got {estimator!r}.")
        self.alpha, self.beta, self.gamma, self.estimator = alpha, beta, gamma, estimator
        self.needs_dataset_size = estimator == "mss"

    def log_weights(self, m: int, dataset_size: int | None) -> Tensor:
        """log W (M, M) of the chosen estimator for a batch of M."""
        if self.estimator == "mws" or m == 1:  # a batch of one: W = 1 either way (class docstring)
            return torch.full((m, m), -math.log(m))
        if dataset_size is None or dataset_size < m:
            raise UserError(
                f"BetaTCVAE with estimator 'mss' needs the training-set size N >= the batch size M, got "
                f"N={dataset_size}, M={m}; use a data module that knows num_train, or estimator: mws."
            )
        n = dataset_size
        w = torch.full((m, m), 1.0 / (m - 1), dtype=torch.float64)
        w[torch.arange(m), (torch.arange(m) + 1) % m] = (n - m + 1) / (n * (m - 1))
        w.fill_diagonal_(1.0 / n)
        return w.log().float()

    @override
    def objective(self, f: ForwardRecord, step: int, dataset_size: int | None) -> Objective:
        log_w = self.log_weights(f.z.shape[0], dataset_size).to(f.z.device)  # (B, B)
        log_q_zx = posterior(f.mu, f.logvar).log_prob(f.z).sum(1)  # (B,)
        log_q_pairs = posterior(f.mu.unsqueeze(0), f.logvar.unsqueeze(0)).log_prob(f.z.unsqueeze(1))  # (B, B, D)
        log_qz = (log_q_pairs.sum(2) + log_w).logsumexp(1)  # (B,): log q(z_i)
        log_prod_qzu = (log_q_pairs + log_w.unsqueeze(2)).logsumexp(1).sum(1)  # (B,): Σ_u log q(z_iu)
        log_pz = self.prior.log_prob(f.z)  # (B,)
        mi, tc = (log_q_zx - log_qz).mean(), (log_qz - log_prod_qzu).mean()
        dim_kl = (log_prod_qzu - log_pz).mean()
        weight = self.kl_schedule(step)
        loss = f.recon.mean() + weight * (self.alpha * mi + self.beta * tc + self.gamma * dim_kl)
        return Objective(loss, {"kl_weight": weight, "index_mi": mi, "tc": tc, "dim_kl": dim_kl})


def batch_covariance(x: Tensor) -> Tensor:
    """Cov[x] over the batch (B, D) -> (D, D), normalised by B (the biased, maximum-likelihood form)."""
    centred = x - x.mean(0)
    return centred.T @ centred / x.shape[0]


class DIPVAE(VAE):
    """DIP-VAE-I and -II: the VAE loss plus penalties that push a latent covariance towards I.

    DIP-VAE (Kumar et al. 2018, "Variational inference of disentangled latent concepts from
    unlabeled observations"): loss = recon + w(step)·(kl + λ_od·Σ_{i≠j} C_ij² + λ_d·Σ_i (C_ii − 1)²),
    C a batch estimate of a latent covariance: ``kind: i``, C = Cov_x[μ(x)] (their eq. 6);
    ``kind: ii``, C = Cov_q[z] = E_x[diag σ²(x)] + Cov_x[μ(x)] (eq. 7). Logged: ``dip_od`` and
    ``dip_d``, the two sums before their weights (squared covariance units of the latents).

    Args:
        kind: ``i`` or ``ii``.
        lambda_od: λ_od ≥ 0, weight on the off-diagonal entries.
        lambda_d: λ_d ≥ 0, weight on the diagonal; None: 10·λ_od for DIP-VAE-I and λ_od for
            DIP-VAE-II (disentanglement_lib's ``lambda_d_factor``).
    """

    terms = ("kl_weight", "dip_od", "dip_d")

    def __init__(
        self, *args, kind: str = "i", lambda_od: float = 10.0, lambda_d: float | None = None, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        if kind not in ("i", "ii"):
            raise UserError(f"model.init_args.kind must be 'i' (DIP-VAE-I) or 'ii' (DIP-VAE-II), got {kind!r}.")
        lambda_d = (10.0 if kind == "i" else 1.0) * lambda_od if lambda_d is None else lambda_d
        for name, value in (("lambda_od", lambda_od), ("lambda_d", lambda_d)):
            if value < 0:
                raise UserError(f"{name} must be >= 0, got {value}.")
        self.kind, self.lambda_od, self.lambda_d = kind, lambda_od, lambda_d

    def covariance(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """C (D, D) of the chosen kind from a batch of posterior parameters (B, D)."""
        cov = batch_covariance(mu.float())
        if self.kind == "ii":
            cov = cov + torch.diag(posterior(mu, logvar).variance.mean(0))
        return cov

    @override
    def objective(self, f: ForwardRecord, step: int, dataset_size: int | None) -> Objective:
        cov = self.covariance(f.mu, f.logvar)
        diagonal = cov.diagonal()
        off_diagonal = cov.square().sum() - diagonal.square().sum()
        on_diagonal = (diagonal - 1).square().sum()
        weight = self.kl_schedule(step)
        penalty = self.lambda_od * off_diagonal + self.lambda_d * on_diagonal
        loss = f.recon.mean() + weight * (f.kl.mean() + penalty)
        return Objective(loss, {"kl_weight": weight, "dip_od": off_diagonal, "dip_d": on_diagonal})


class IWAE(VAE):
    """Importance-weighted autoencoder, trained on the k-sample bound.

    Importance-weighted autoencoder (Burda et al. 2015): trained on the k-sample bound
    L_k = log (1/k) Σ_i p(x, z_i)/q(z_i|x), z_i ~ q(z|x); loss = −L_k in nats per example (k = 1:
    the one-sample −ELBO). The record's draw is the first of the k samples, so a batch costs k
    decoder passes; the weights come from ``evaluation.metrics.iw_log_weights``, as in ``nll_iw``.

    ``dreg``: the encoder gets the doubly reparameterized gradient of Tucker et al. 2019 (eq. 7),
    Σ_i w̃_i² ∂log w_i/∂z_i ∂z_i/∂φ with w̃ the normalised weights: log q(z_i|x) is evaluated
    with its parameters held fixed and the gradient reaching each z_i is scaled by w̃_i. It has
    the same expectation as the plain gradient and a variance that does not grow with k; the
    decoder's gradient is unchanged. The KL schedule is not used (L_k has no separate KL term).

    Args:
        k: importance samples per example in training, ≥ 1.
        dreg: use the DReG estimator for the encoder's gradient.
    """

    def __init__(self, *args, k: int = 5, dreg: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if k < 1:
            raise UserError(f"model.init_args.k must be >= 1 (importance samples per example in training), got {k}.")
        if not isinstance(self.kl_schedule, Constant) or self.kl_schedule.weight != 1.0:
            raise UserError(
                "IWAE trains on the k-sample bound, which has no KL term to weight; remove model.init_args.kl_schedule."
            )
        self.k, self.dreg = k, dreg

    def log_weights(self, f: ForwardRecord) -> Tensor:
        """log w (k, B) in nats: the record's draw first, then k − 1 new draws of q(z|x)."""
        q = posterior(f.mu, f.logvar)
        q_w = posterior(f.mu.detach(), f.logvar.detach()) if self.dreg else q
        draws, rows = [f.z], [record_log_weight(self, f, q_w)[None]]
        if self.k > 1:
            draws.append(q.rsample((self.k - 1,)))  # (k − 1, B, D)
            rows.append(iw_log_weights(self, f.x, q_w, draws[1], f.mu.dtype))
        log_w = torch.cat(rows)
        if self.dreg and torch.is_grad_enabled() and f.z.requires_grad:
            w = log_w.detach().softmax(0)  # w̃ (k, B)
            f.z.register_hook(lambda g: g * w[0].unsqueeze(-1))
            if self.k > 1:
                draws[1].register_hook(lambda g: g * w[1:].unsqueeze(-1))
        return log_w

    @override
    def objective(self, f: ForwardRecord, step: int, dataset_size: int | None) -> Objective:
        bound = self.log_weights(f).logsumexp(0) - math.log(self.k)  # (B,): L_k per example
        return Objective(-bound.mean(), {"kl_weight": 1.0})


def permute_dims(z: Tensor) -> Tensor:
    """Each column of z (B, D) shuffled by its own random permutation of the batch (Kim & Mnih
    2018, algorithm 1): every marginal q(z_u) is kept, the dependence between columns is broken."""
    order = torch.rand(z.shape, device=z.device).argsort(0)
    return z.gather(0, order)


class Discriminator(nn.Module):
    """FactorVAE's discriminator: an MLP from z (B, D) to two logits (B, 2), "from q(z)" and
    "from Π_u q(z_u)": ``layers`` hidden layers of ``hidden`` units with leaky ReLU (slope 0.2),
    then the output layer, so ``layers + 1`` linear layers in all. The default is Kim & Mnih
    2018's and disentanglement_lib's: 6 hidden layers of 1000 units plus the output."""

    def __init__(self, latent_dim: int, hidden: int = 1000, layers: int = 6) -> None:
        super().__init__()
        if hidden < 1 or layers < 0:
            raise UserError(f"the discriminator needs hidden >= 1 units and layers >= 0, got {hidden} and {layers}.")
        sizes = [latent_dim] + [hidden] * layers
        blocks = [m for a, b in itertools.pairwise(sizes) for m in (nn.Linear(a, b), nn.LeakyReLU(0.2))]
        self.net = nn.Sequential(*blocks, nn.Linear(sizes[-1], 2))

    @staticmethod
    def hidden_layers(state_dict: dict[str, Tensor], prefix: str = "discriminator.") -> int | None:
        """The number of hidden layers of the discriminator whose weights a state dict holds under
        ``prefix`` (None: it holds none)."""
        weights = [k for k in state_dict if k.startswith(f"{prefix}net.") and k.endswith(".weight")]
        return len(weights) - 1 if weights else None

    @override
    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class FactorVAE(VAE):
    """FactorVAE: the VAE loss plus γ times a discriminator's estimate of the total correlation.

    FactorVAE (Kim & Mnih 2018, "Disentangling by factorising"): loss = recon + w(step)·(kl + γ·tc),
    tc ≈ E[log D(z)/(1 − D(z))] = E[logit_q − logit_perm], the density-ratio estimate of the total
    correlation from a discriminator D that tells z ~ q(z) from ``permute_dims(z)``. D is trained
    with its own optimizer on the cross-entropy ``disc_loss`` (nats), on the same batch's z
    (detached), as disentanglement_lib does. Lightning's manual optimization: per batch one VAE
    step, then one discriminator step; ``global_step`` counts the VAE steps only, so ``max_steps``
    and the schedules mean what they mean for the other models. Checkpoints hold both optimizers'
    states. Gradient clipping and LR schedulers are not applied (manual optimization).

    Args:
        gamma: weight γ ≥ 0 on the TC estimate.
        disc_hidden: units per hidden layer of the discriminator.
        disc_layers: hidden layers of the discriminator, not counting its output layer (so
            ``disc_layers + 1`` linear layers in all); 6, Kim & Mnih's. Before issue 27 this
            counted the output layer too, and the default built 5 hidden layers: such checkpoints
            need ``disc_layers: 5``.
        disc_optimizer: the discriminator's optimizer; None: Adam(lr 1e-4, betas (0.5, 0.9)), Kim & Mnih's.
    """

    terms = ("kl_weight", "tc", "disc_loss")

    def __init__(
        self,
        *args,
        gamma: float = 40.0,
        disc_hidden: int = 1000,
        disc_layers: int = 6,
        disc_optimizer: OptimizerCallable | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if gamma < 0:
            raise UserError(f"gamma must be >= 0, got {gamma}.")
        if self.lr_scheduler is not None:
            raise UserError(
                "FactorVAE steps its optimizers by hand and does not apply model.init_args.lr_scheduler; remove it."
            )
        self.gamma, self.disc_layers = gamma, disc_layers
        self.discriminator = Discriminator(self.latent_dim, disc_hidden, disc_layers)
        self.disc_optimizer = disc_optimizer or functools.partial(torch.optim.Adam, lr=1e-4, betas=(0.5, 0.9))

    @classmethod
    @override
    def settings_of_weights(cls, state_dict: dict[str, Tensor]) -> dict[str, int]:
        """``disc_layers`` of the saved discriminator: checkpoints written before issue 27 saved
        ``disc_layers: 6`` with 5 hidden layers."""
        layers = Discriminator.hidden_layers(state_dict)
        return {} if layers is None else {"disc_layers": layers}

    @property
    @override
    def automatic_optimization(self) -> bool:
        return False

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        if value:
            raise UserError(
                "FactorVAE trains its discriminator with its own optimizer through manual optimization, "
                "so automatic_optimization cannot be True; leave it unset."
            )

    def disc_loss(self, z: Tensor) -> Tensor:
        """Cross-entropy (nats) of D on z (B, D) as class 0 and on permute_dims(z) as class 1, averaged."""
        z = z.detach()
        logits = self.discriminator(torch.cat([z, permute_dims(z)]))  # (2B, 2)
        labels = torch.arange(2, device=z.device).repeat_interleave(z.shape[0])
        return nn.functional.cross_entropy(logits, labels)

    @override
    def objective(self, f: ForwardRecord, step: int, dataset_size: int | None) -> Objective:
        logits = self.discriminator(f.z)  # (B, 2)
        tc = (logits[:, 0] - logits[:, 1]).mean()
        weight = self.kl_schedule(step)
        loss = f.recon.mean() + weight * (f.kl.mean() + self.gamma * tc)
        return Objective(loss, {"kl_weight": weight, "tc": tc, "disc_loss": self.disc_loss(f.z)})

    @override
    def training_step(self, batch, batch_idx: int) -> Tensor:
        vae_opt, disc_opt = self.optimizers()
        objective, _ = self._step(batch, "train")
        vae_opt.zero_grad(set_to_none=True)
        self.manual_backward(objective.loss)
        vae_opt.step()
        disc_opt.zero_grad(set_to_none=True)  # drops the gradient the VAE loss left on D
        self.manual_backward(objective.terms["disc_loss"])
        # through the strategy, not disc_opt.step(): the same precision and callback hooks, but
        # global_step is not advanced a second time
        self.trainer.strategy.optimizer_step(disc_opt.optimizer, closure=lambda: None, model=self)
        return objective.loss.detach()

    @override
    def configure_optimizers(self):
        vae_params = [p for name, p in self.named_parameters() if not name.startswith("discriminator.")]
        return [self.optimizer(vae_params), self.disc_optimizer(self.discriminator.parameters())]
