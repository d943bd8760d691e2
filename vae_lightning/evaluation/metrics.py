"""Evaluation metrics as ``torchmetrics.Metric``s: their states are sums, reduced with
``dist_reduce_fx="sum"``, so the values are exact under DDP whatever the split of the data.

Names and units (per example, averaged over the split):

- ``nll_iw``: −log p̂_k(x), the importance-weighted bound on −log p(x) with k samples (Burda et
  al. 2015, eq. 8), in nats. It is an upper bound on −log p(x), never above −ELBO in
  expectation, and tightens as k grows; k = 1 is the (Monte-Carlo) −ELBO.
- ``bpd``: nll_iw / (C·H·W · ln 2), bits per data dimension.
- ``kl_per_dim``: KL(q(z_u|x) || N(0, 1)) per latent dimension u, in nats, shape (D,). With the
  standard-normal prior these are the ELBO's KL terms and sum to ``kl``; with a learned prior
  (mixture, VampPrior) the KL does not split by dimension, and ``kl_per_dim`` is each
  dimension's distance from N(0, 1), a fixed reference: not a term of the ELBO, and its sum is
  not ``kl``. ``active_units`` does not depend on the prior and is the collapse signal then.
  A hierarchical VAE's KL per dimension is its own (each group against its conditional prior,
  given the record's draw of the groups above), and sums to ``kl``.
- ``kl``: the mean of the model's own KL(q(z|x) || p(z)) (closed form or Monte Carlo, as the
  prior computes it), in nats; the collapse monitor's total.
- ``active_units``: the number of dimensions u with Cov_x(E_q[z_u|x]) > 0.01 (Burda et al. 2015,
  section 5.2); ``mu_var`` is that variance per dimension, shape (D,).
- ``mi``: an estimate of the mutual information I(x; z) under q(x, z) = p_data(x) q(z|x), in
  nats: the batch mean of log q(z_i|x_i) − log q(z_i) at one draw z_i ~ q(z|x_i) per example,
  with the aggregate posterior q(z) approximated by the mixture of the posteriors of the
  examples in the same batch (He et al. 2019, "Lagging inference networks"; Dieng et al. 2019).
  Both terms are evaluated at the same sampled z_i, so each term, and so every batch estimate,
  is at most log(batch size) (the mixture contains q(z_i|x_i) with weight 1/B), and the noise
  of the two terms cancels: a collapsed model (all posteriors equal) gives exactly 0. It is
  biased low for large MI, does not depend on the prior, and compares runs evaluated with the
  same batch size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent, Normal
from torchmetrics import Metric

from vae_lightning.nets import decoder_output
from vae_lightning.objectives import gaussian_kl, posterior
from vae_lightning.priors import StandardNormal

#: decoder passes of at most this many images at once while estimating nll_iw (memory bound)
IW_MAX_BATCH = 2048


def _log_prior(model: nn.Module, z: Tensor) -> Tensor:
    """log p(z) summed over D, under ``model.prior`` (a model without one: the standard normal)."""
    prior = getattr(model, "prior", None)
    return (StandardNormal() if prior is None else prior).log_prob(z)


def iw_log_weights(model: nn.Module, x: Tensor, q: Normal, z: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """log w = log p(x|z) + log p(z) − log q(z|x) for draws z (n, B, D) of q(z|x) (float32, (B, D)
    parameters) and x (B, C, H, W): (n, B) in nats; the decoder runs in ``dtype``. Differentiable:
    ``IWAE`` trains on it (with q's parameters detached for DReG)."""
    n, batch = z.shape[:2]
    out = decoder_output(model.decoder, z.flatten(0, 1).to(dtype), x)  # (n·B, C, H, W), draw-major
    xs = x.unsqueeze(0).expand(n, *x.shape).flatten(0, 1)
    log_px_z = model.likelihood.log_prob(out, xs).view(n, batch)
    return log_px_z + _log_prior(model, z) - q.log_prob(z).sum(-1)


def record_log_weight(model: nn.Module, f, q: Normal) -> Tensor:
    """log w (B,) of a ``ForwardRecord``'s own draw f.z, from its recon: no decoder pass."""
    return -f.recon.float() + _log_prior(model, f.z) - q.log_prob(f.z).sum(-1)


@torch.no_grad()
def iw_log_likelihood(model: nn.Module, x: Tensor, k: int, max_batch: int | None = None, first=None) -> Tensor:
    """log p̂_k(x) = log (1/k) Σ_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x) (Burda et al. 2015).

    ``model`` has ``encoder``, ``decoder``, ``likelihood`` and ``prior`` (default: standard normal)
    as in ``VAE``; p(z) is that prior's density. x is (B, C, H, W). A model whose q(z|x) is not one
    diagonal Gaussian (``HierarchicalVAE``) draws its own samples: its ``draw_log_weights(x, n)``
    returns log w (n, B) for n new draws, and ``first`` is not used.
    ``first``: the batch's ``ForwardRecord``, whose q(z|x) is used instead of a second encoder
    pass and whose draw z (with its recon) is the first of the k samples. The remaining samples
    are drawn in chunks of at most ``max_batch`` decoded images (None: the decoder's
    ``iw_max_batch`` if it has one, else ``IW_MAX_BATCH``) and combined by a running
    log-sum-exp, so memory does not grow with k. Returns (B,) in nats, float32.
    """
    if k < 1:
        raise ValueError(f"the importance-weighted bound needs k >= 1 samples, got {k}.")
    max_batch = max_batch or getattr(model.decoder, "iw_max_batch", None) or IW_MAX_BATCH
    chunk = max(1, max_batch // x.shape[0])
    draws = getattr(model, "draw_log_weights", None)
    if draws is not None:
        total = torch.cat([draws(x, min(chunk, k - start)) for start in range(0, k, chunk)]).logsumexp(0)
        return total - math.log(k)
    mu, logvar = (first.mu, first.logvar) if first is not None else model.encoder(x)
    q = posterior(mu, logvar)  # float32
    total = torch.full((x.shape[0],), -math.inf, device=q.loc.device)
    if first is not None:
        total = record_log_weight(model, first, q)
    for start in range(0 if first is None else 1, k, chunk):
        z = q.sample((min(chunk, k - start),))  # (n, B, D)
        total = torch.logaddexp(total, torch.logsumexp(iw_log_weights(model, x, q, z, mu.dtype), dim=0))
    return total - math.log(k)


def mutual_information(mu: Tensor, logvar: Tensor) -> Tensor:
    """One batch's estimate of I(x; z) under q in nats (He et al. 2019; see the module doc)."""
    q = posterior(mu, logvar)
    z = q.sample()  # (B, D): one z per example
    log_q_zi_xj = Normal(q.loc.unsqueeze(0), q.scale.unsqueeze(0)).log_prob(z.unsqueeze(1)).sum(-1)  # (B, B)
    log_qz = torch.logsumexp(log_q_zi_xj, dim=1) - math.log(len(z))  # aggregate posterior at z_i
    # the sampled log q(z_i|x_i), not the closed-form entropy: the same draw in both terms, so
    # their noise cancels (the entropy form has sd ≈ √(D/2B) nats) and each term is ≤ log B
    return (log_q_zi_xj.diagonal() - log_qz).mean()


class _SumMetric(Metric):
    full_state_update = False

    def _sum_state(self, name: str, shape: tuple[int, ...] = ()) -> None:
        # float64 sums: E[μ²] − E[μ]² over thousands of examples cancels badly in float32
        self.add_state(name, torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")


class IWBound(_SumMetric):
    """Mean importance-weighted NLL and bits per dimension. ``update(nll)`` takes −log p̂_k(x)
    per example (B,) in nats; ``compute()`` returns {"nll_iw": nats, "bpd": bits per dimension}.

    Args:
        num_dims: data dimensions per example, C·H·W (the denominator of bpd).
    """

    def __init__(self, num_dims: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_dims = num_dims
        self._sum_state("nll_sum")
        self._sum_state("count")

    def update(self, nll: Tensor) -> None:
        self.nll_sum += nll.double().sum()
        self.count += nll.numel()

    def compute(self) -> dict[str, Tensor]:
        nll = (self.nll_sum / self.count).float()
        return {"nll_iw": nll, "bpd": nll / (self.num_dims * math.log(2.0))}


class PixelMarginals(_SumMetric):
    """The independent-pixel model of a set of images, fit by maximum likelihood; the background
    model of the ``neg_llr`` anomaly score. ``update(x)`` takes images (B, C, H, W) with pixels
    in [0, 1]; ``compute()`` returns a distribution whose ``log_prob(x)`` is (B,) in nats.

    Binary data: Bernoulli(p) per pixel, with add-one smoothing, p = (Σx + 1) / (n + 2), so a
    pixel never on in the fitted images is unlikely rather than impossible. Other data:
    Normal(mean, std) per pixel, std at least one grey level (1/255): 8-bit data carry no finer
    detail, and a constant pixel would otherwise have infinite density.

    Args:
        image_shape: (C, H, W).
        binary: pixels are 0 or 1 (the model's likelihood is discrete).
    """

    def __init__(self, image_shape: tuple[int, int, int], binary: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.binary = binary
        self._sum_state("count")
        self._sum_state("pixel_sum", tuple(image_shape))
        self._sum_state("pixel_sq_sum", tuple(image_shape))

    def update(self, x: Tensor) -> None:
        x = x.double()
        self.count += x.shape[0]
        self.pixel_sum += x.sum(0)
        self.pixel_sq_sum += x.square().sum(0)

    def compute(self) -> Independent:
        if self.count == 0:
            raise ValueError("PixelMarginals: no images were seen; call update() first.")
        if self.binary:
            p = (self.pixel_sum + 1) / (self.count + 2)
            return Independent(Bernoulli(probs=p.float(), validate_args=False), 3)
        mean = self.pixel_sum / self.count
        std = (self.pixel_sq_sum / self.count - mean.square()).clamp_min(0).sqrt().clamp_min(1 / 255)
        return Independent(Normal(mean.float(), std.float(), validate_args=False), 3)


class KLPerDim(_SumMetric):
    """Mean KL(q(z_u|x) || N(0, 1)) per latent dimension, shape (D,), in nats.
    ``update(mu, logvar)`` takes the posterior parameters (B, D)."""

    def __init__(self, latent_dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self._sum_state("kl_sum", (latent_dim,))
        self._sum_state("count")

    def update(self, mu: Tensor, logvar: Tensor, kl_dims: Tensor | None = None) -> None:
        """``kl_dims`` (B, D): the model's own KL per dimension, used instead of the closed form
        against N(0, 1) when given."""
        kl = gaussian_kl(mu, logvar) if kl_dims is None else kl_dims.float()
        self.kl_sum += kl.double().sum(0)
        self.count += mu.shape[0]

    def compute(self) -> Tensor:
        return (self.kl_sum / self.count).float()


class ActiveUnits(_SumMetric):
    """Active units (Burda et al. 2015): dimension u is active when Cov_x(E_q[z_u|x]) exceeds
    ``threshold``. ``update(mu)`` takes posterior means (B, D); ``compute()`` returns
    {"active_units": count, "mu_var": per-dimension variance (D,)}.

    Args:
        latent_dim: D.
        threshold: variance above which a dimension counts as active (0.01 in the paper).
    """

    def __init__(self, latent_dim: int, threshold: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self._sum_state("mu_sum", (latent_dim,))
        self._sum_state("mu_sq_sum", (latent_dim,))
        self._sum_state("count")

    def update(self, mu: Tensor) -> None:
        mu = mu.double()
        self.mu_sum += mu.sum(0)
        self.mu_sq_sum += mu.square().sum(0)
        self.count += mu.shape[0]

    def compute(self) -> dict[str, Tensor]:
        mean = self.mu_sum / self.count
        var = (self.mu_sq_sum / self.count - mean.square()).clamp(min=0).float()
        return {"active_units": (var > self.threshold).sum(), "mu_var": var}


class MutualInformation(_SumMetric):
    """Mean over batches (weighted by batch size) of the batch estimate of I(x; z) in nats.
    ``update(mu, logvar)`` takes the posterior parameters (B, D) of one batch."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._sum_state("mi_sum")
        self._sum_state("count")

    def update(self, mu: Tensor, logvar: Tensor) -> None:
        self.mi_sum += mutual_information(mu, logvar).double() * mu.shape[0]
        self.count += mu.shape[0]

    def compute(self) -> Tensor:
        return (self.mi_sum / self.count).float()


class MeanKL(_SumMetric):
    """Mean of the model's per-example KL (B,) in nats, whatever its prior."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._sum_state("kl_sum")
        self._sum_state("count")

    def update(self, kl: Tensor) -> None:
        self.kl_sum += kl.double().sum()
        self.count += kl.numel()

    def compute(self) -> Tensor:
        return (self.kl_sum / self.count).float()


class LatentMetrics(nn.Module):
    """The latent-space metrics of one split, updated from posterior parameters (B, D) and the
    model's KL (B,) (None: the closed form against N(0, I)). ``compute()`` returns kl_per_dim
    (D,), mu_var (D,), active_units, mi and kl (see the module doc)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.kl = KLPerDim(latent_dim)
        self.active = ActiveUnits(latent_dim)
        self.mi = MutualInformation()
        self.total_kl = MeanKL()

    def update(self, mu: Tensor, logvar: Tensor, kl: Tensor | None = None, kl_dims: Tensor | None = None) -> None:
        mu, logvar = mu.detach(), logvar.detach()
        self.kl.update(mu, logvar, None if kl_dims is None else kl_dims.detach())
        self.active.update(mu)
        self.mi.update(mu, logvar)
        self.total_kl.update(gaussian_kl(mu, logvar).sum(1) if kl is None else kl.detach())

    def compute(self) -> dict[str, Tensor]:
        return {
            "kl_per_dim": self.kl.compute(),
            **self.active.compute(),
            "mi": self.mi.compute(),
            "kl": self.total_kl.compute(),
        }

    def reset(self) -> None:
        for metric in (self.kl, self.active, self.mi, self.total_kl):
            metric.reset()
