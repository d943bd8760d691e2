"""Priors p(z) over the D latent dimensions, chosen with the model's ``prior`` argument.

In YAML: ``model.init_args.prior: {class_path: vae_lightning.VampPrior, init_args: {num_components: 500}}``;
left out, the prior is ``StandardNormal`` (the VAE of Kingma & Welling 2014).

Every prior has, for latents z (..., D) in float32:

- ``log_prob(z)``: log p(z), shape (...), in nats (used by the IW bound, ``log_pz`` and β-TCVAE);
- ``sample(n, generator)``: n draws (n, D), on the CPU (pictures and ``vae sample`` draw from it);
- ``kl(mu, logvar, z)``: the ELBO's KL(q(z|x) || p(z)) for q(z|x) = N(mu, diag exp(logvar)).
  Where it has a closed form per dimension (``closed_form``: ``StandardNormal``) it is (B, D),
  summing to the KL; otherwise it is one Monte Carlo column (B, 1): log q(z|x) − log p(z) at
  the record's draw z, an unbiased one-sample estimate (the KL of a mixture has no closed form).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from vae_lightning.errors import UserError
from vae_lightning.objectives import LOGVAR_MAX, LOGVAR_MIN, gaussian_kl, posterior


class Prior(nn.Module):
    """Base class of the priors; see the module doc for the three methods."""

    #: the KL has a closed form per latent dimension, so ``kl`` returns (B, D)
    closed_form: bool = False

    def build(self, latent_dim: int, image_shape: tuple[int, int, int], encoder: nn.Module) -> None:
        """Called once by the model before training: sizes the parameters for D = ``latent_dim``."""

    @property
    def kl_method(self) -> str:
        """How ``kl`` is computed, in words, for logs and docs."""
        if self.closed_form:
            return "closed form, per latent dimension"
        return "Monte Carlo, one sample: log q(z|x) - log p(z) at the ELBO's draw z"

    def log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def kl(self, mu: Tensor, logvar: Tensor, z: Tensor) -> Tensor:
        log_q = posterior(mu, logvar).log_prob(z).sum(-1)  # (B,)
        return (log_q - self.log_prob(z)).unsqueeze(1)  # (B, 1)


def _check_components(num_components: int, name: str) -> None:
    if num_components < 1:
        raise UserError(
            f"model.init_args.prior.init_args.num_components of {name} must be >= 1 (the number K of mixture "
            f"components), got {num_components}."
        )


def _mixture_log_prob(z: Tensor, loc: Tensor, scale: Tensor, log_weights: Tensor) -> Tensor:
    """log Σ_k w_k N(z; loc_k, diag scale_k²) for z (..., D), loc and scale (K, D): shape (...)."""
    per_component = Normal(loc, scale).log_prob(z.unsqueeze(-2)).sum(-1)  # (..., K)
    return torch.logsumexp(per_component + log_weights, dim=-1)


def _mixture_sample(n: int, loc: Tensor, scale: Tensor, weights: Tensor, generator) -> Tensor:
    """n draws (n, D) on the CPU from the mixture of N(loc_k, diag scale_k²) with weights (K,)."""
    loc, scale = loc.detach().float().cpu(), scale.detach().float().cpu()
    k = torch.multinomial(weights.detach().float().cpu(), n, replacement=True, generator=generator)  # (n,)
    eps = torch.randn(n, loc.shape[1], generator=generator)
    return loc[k] + scale[k] * eps


class StandardNormal(Prior):
    """The standard-normal prior N(0, I), the default.

    p(z) = N(0, I). The KL is in closed form per dimension (``gaussian_kl``); no parameters."""

    closed_form = True

    def __init__(self) -> None:
        super().__init__()
        self.latent_dim = 0

    def build(self, latent_dim: int, image_shape: tuple[int, int, int], encoder: nn.Module) -> None:
        self.latent_dim = latent_dim

    def log_prob(self, z: Tensor) -> Tensor:
        return Normal(0.0, 1.0).log_prob(z.float()).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator)

    def kl(self, mu: Tensor, logvar: Tensor, z: Tensor) -> Tensor:
        return gaussian_kl(mu, logvar)  # (B, D)


class MixtureOfGaussians(Prior):
    """A learned mixture of K diagonal Gaussians as the prior.

    p(z) = Σ_k π_k N(z; m_k, diag s_k²), K diagonal Gaussians whose means m (K, D), log
    variances log s² (K, D) and weights π = softmax(logits) (K,) are learned with the model.
    Means start at N(0, I) draws, variances at 1, weights equal. KL: Monte Carlo.

    Args:
        num_components: K ≥ 1.
    """

    def __init__(self, num_components: int = 10) -> None:
        super().__init__()
        _check_components(num_components, "MixtureOfGaussians")
        self.num_components = num_components
        # sized by build() once D is known (empty here so the constructor draws no random numbers)
        self.means = nn.Parameter(torch.empty(0))
        self.logvars = nn.Parameter(torch.empty(0))
        self.logits = nn.Parameter(torch.zeros(num_components))

    def build(self, latent_dim: int, image_shape: tuple[int, int, int], encoder: nn.Module) -> None:
        self.means = nn.Parameter(torch.randn(self.num_components, latent_dim))
        self.logvars = nn.Parameter(torch.zeros(self.num_components, latent_dim))

    def _scale(self) -> Tensor:
        return torch.exp(0.5 * self.logvars.float().clamp(LOGVAR_MIN, LOGVAR_MAX))  # (K, D)

    def log_prob(self, z: Tensor) -> Tensor:
        return _mixture_log_prob(z.float(), self.means.float(), self._scale(), self.logits.float().log_softmax(0))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return _mixture_sample(n, self.means, self._scale(), self.logits.float().softmax(0), generator)


class VampPrior(Prior):
    """The VampPrior: a mixture of the model's posteriors at K learned pseudo-inputs.

    The VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior", eq. 9): the mixture of the
    model's own posteriors at K learned pseudo-inputs u_k, p(z) = (1/K) Σ_k q(z|u_k). The
    pseudo-inputs (K, C, H, W) are sigmoid(θ_k), so they stay in the data's [0, 1] range, and
    start near 0.5 (θ ~ N(0, 0.01²)). KL: Monte Carlo. Each use costs one encoder pass over
    the K pseudo-inputs.

    Args:
        num_components: K ≥ 1 pseudo-inputs.
    """

    def __init__(self, num_components: int = 500) -> None:
        super().__init__()
        _check_components(num_components, "VampPrior")
        self.num_components = num_components
        self.pseudo_logits = nn.Parameter(torch.empty(0))

    def build(self, latent_dim: int, image_shape: tuple[int, int, int], encoder: nn.Module) -> None:
        self.pseudo_logits = nn.Parameter(0.01 * torch.randn(self.num_components, *image_shape))
        # a plain attribute, not a submodule: the encoder belongs to the VAE, and registering it
        # here would save its weights twice under new state_dict keys
        object.__setattr__(self, "_encoder", encoder)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # hyper-parameters pickle the prior: leave the encoder out
        state.pop("_encoder", None)
        return state

    @property
    def pseudo_inputs(self) -> Tensor:
        """u (K, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.pseudo_logits)

    def components(self) -> Normal:
        """q(z|u_k) for the K pseudo-inputs: a Normal with loc and scale (K, D), float32."""
        mu, logvar = self._encoder(self.pseudo_inputs)
        return posterior(mu, logvar)

    def log_prob(self, z: Tensor) -> Tensor:
        q = self.components()
        log_weights = torch.full((self.num_components,), -math.log(self.num_components), device=q.loc.device)
        return _mixture_log_prob(z.float(), q.loc, q.scale, log_weights)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            q = self.components()
        return _mixture_sample(n, q.loc, q.scale, torch.ones(self.num_components), generator)
