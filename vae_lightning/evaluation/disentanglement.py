"""Disentanglement metrics for data with ground-truth factors (sprites), following
disentanglement_lib (Locatello et al. 2019):

- **MIG**, the mutual information gap (Chen et al. 2018): on ``num_points`` random factor
  tuples, each dimension of the mean representation is discretized into ``num_bins`` equal-width
  bins; for every factor k, the gap between the two largest I(z_u; v_k) (in nats), divided by
  H(v_k), averaged over factors. 0: no dimension singles a factor out; 1: each factor is captured
  by exactly one dimension. With 20 bins, factors with more than 20 values lose information, so
  latents *equal* to the sprites factors score ≈ 0.90, not 1.
- **FactorVAE score** (Kim & Mnih 2018): dimensions with std < 0.05 over the data are pruned;
  for a batch of ``batch_size`` inputs sharing one randomly chosen factor value, each dimension's
  variance is divided by its variance over the data and the vote goes to (that factor, the
  dimension with the smallest ratio); a majority-vote classifier maps dimensions to factors
  from ``num_train`` votes and its accuracy on ``num_eval`` fresh votes is the score. 1: fixing a
  factor always pins one dimension; chance is about 1 / (number of factors).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Represent = Callable[[Tensor], Tensor]  # factor indices (N, K) -> mean representations (N, D)


def sample_factors(n: int, factor_sizes: Sequence[int], generator: torch.Generator) -> Tensor:
    """n uniformly random factor tuples (n, K), long."""
    return torch.stack([torch.randint(size, (n,), generator=generator) for size in factor_sizes], 1)


def histogram_discretize(codes: Tensor, num_bins: int = 20) -> Tensor:
    """Each column of codes (N, D) into ``num_bins`` equal-width bins between its min and max:
    (N, D) long in [0, num_bins). The bins are numpy.histogram's (codes in float64), read as
    disentanglement_lib reads them (``np.digitize`` on the left edges): edge i is
    ``low + i * (high - low) / num_bins``, a value goes to the last left edge at or below it, and
    a column whose values are all equal gets numpy's range ``[low - 0.5, low + 0.5]``, so it
    falls into the middle bin."""
    codes = codes.double()
    low, high = codes.min(0).values, codes.max(0).values
    flat = low == high
    low, high = torch.where(flat, low - 0.5, low), torch.where(flat, high + 0.5, high)
    step = (high - low) / num_bins  # numpy.linspace's step, then start + i * step
    edges = low.unsqueeze(1) + torch.arange(num_bins, dtype=torch.float64) * step.unsqueeze(1)  # (D, num_bins)
    # the number of left edges <= x, minus one (np.digitize, right=False)
    return (torch.searchsorted(edges, codes.T.contiguous(), right=True) - 1).T.clamp(0, num_bins - 1)


def discrete_mutual_info(a: Tensor, b: Tensor) -> Tensor:
    """Mutual information in nats between two discrete variables given as samples (N,) long."""
    a = torch.unique(a, return_inverse=True)[1]
    b = torch.unique(b, return_inverse=True)[1]
    nb = int(b.max()) + 1
    joint = torch.bincount(a * nb + b, minlength=(int(a.max()) + 1) * nb).double().view(-1, nb)
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    nz = joint > 0
    return (joint[nz] * (joint[nz] / (pa * pb).expand_as(joint)[nz]).log()).sum()


def mig(codes: Tensor, factors: Tensor, num_bins: int = 20) -> float:
    """Mutual information gap of mean representations codes (N, D) for factor indices (N, K).

    A factor that takes one value in the sample has entropy 0 and nothing to be captured: it is
    left out of the average (disentanglement_lib divides by its zero entropy and gets NaN); with
    no varying factor at all the score is 0."""
    binned = histogram_discretize(codes, num_bins)
    varying = [k for k in range(factors.shape[1]) if len(factors[:, k].unique()) > 1]
    if not varying:
        return 0.0
    m = torch.stack(
        [
            torch.stack([discrete_mutual_info(binned[:, u], factors[:, k]) for k in varying])
            for u in range(codes.shape[1])
        ]
    )  # (D, K varying)
    entropy = torch.stack([discrete_mutual_info(factors[:, k], factors[:, k]) for k in varying])
    m = torch.cat([m, torch.zeros_like(m[:1])])  # with one latent dimension the runner-up has 0
    top2 = m.topk(2, dim=0).values  # (2, K)
    return float(((top2[0] - top2[1]) / entropy).mean())


def _vote_factors(
    factor_sizes: Sequence[int], num_votes: int, batch_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The inputs of ``num_votes`` votes: the fixed factor of each (V,) and the factor tuples
    (V * batch_size, K), each vote's batch sharing the value of its factor. Drawn vote by vote
    in the order the votes were once drawn and encoded one at a time, so a seed gives the same votes."""
    fixed, batches = [], []
    for _ in range(num_votes):
        k = int(torch.randint(len(factor_sizes), (1,), generator=generator))
        factors = sample_factors(batch_size, factor_sizes, generator)
        factors[:, k] = factors[0, k]
        fixed.append(k)
        batches.append(factors)
    return torch.tensor(fixed), torch.cat(batches)


def _votes(codes: Tensor, fixed: Tensor, num_factors: int, global_var: Tensor, active: Tensor) -> Tensor:
    """(K, D) counts of (fixed factor, dimension with the smallest normalized variance), from
    the codes (V * batch, D) of every vote's batch at once."""
    local_var = codes.double().view(len(fixed), -1, codes.shape[1]).var(1)  # (V, D), ddof = 1 as disentanglement_lib
    active_idx = active.nonzero().squeeze(1)
    dims = active_idx[torch.argmin(local_var[:, active] / global_var[active], dim=1)]  # (V,)
    votes = torch.zeros(num_factors * len(global_var), dtype=torch.long)
    votes.index_add_(0, fixed * len(global_var) + dims, torch.ones_like(dims))
    return votes.view(num_factors, len(global_var))


def factor_vae_score(
    represent: Represent,
    factor_sizes: Sequence[int],
    num_train: int = 1000,
    num_eval: int = 500,
    batch_size: int = 64,
    num_variance: int = 10_000,
    prune_std: float = 0.05,
    seed: int = 0,
    codes: Tensor | None = None,
) -> float:
    """FactorVAE score (Kim & Mnih 2018); ``codes``: representations of ``num_variance`` random
    factor tuples if already at hand (their variances normalize the votes)."""
    g = torch.Generator().manual_seed(seed)
    if codes is None:
        codes = represent(sample_factors(num_variance, factor_sizes, g))
    global_var = codes.double().var(0)
    active = global_var.sqrt() >= prune_std
    if not active.any():
        return 0.0  # every dimension collapsed: no dimension can point at a factor
    # the training and evaluation votes' batches, encoded in one pass
    train_fixed, train_factors = _vote_factors(factor_sizes, num_train, batch_size, g)
    eval_fixed, eval_factors = _vote_factors(factor_sizes, num_eval, batch_size, g)
    vote_codes = represent(torch.cat([train_factors, eval_factors]))
    train_codes, eval_codes = vote_codes[: len(train_factors)], vote_codes[len(train_factors) :]
    train = _votes(train_codes, train_fixed, len(factor_sizes), global_var, active)
    classifier = train.argmax(0)  # (D,): the factor each dimension votes for most
    evals = _votes(eval_codes, eval_fixed, len(factor_sizes), global_var, active)
    return float(evals[classifier, torch.arange(evals.shape[1])].sum() / evals.sum())


def model_representation(
    model,
    render: Callable[[Tensor], Tensor],
    batch: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> Represent:
    """factors (N, K) -> posterior means μ(render(factors)) (N, D), float32 on the CPU. Rendered
    and encoded ``batch`` at a time on the model's device, under ``torch.inference_mode``;
    ``progress(done, total)`` after each batch."""
    device = getattr(model, "device", "cpu")

    def represent(factors: Tensor) -> Tensor:
        out = []
        with torch.inference_mode():  # on the function that encodes: it also runs outside Lightning's test loop
            for i in range(0, len(factors), batch):
                mu, _ = model.encode(render(factors[i : i + batch].to(device)))  # a hierarchical model's mean path
                out.append(mu.cpu())
                if progress is not None:
                    progress(min(i + batch, len(factors)), len(factors))
        return torch.cat(out) if out else torch.zeros(0, 0)  # outside inference mode: an ordinary tensor

    return represent
