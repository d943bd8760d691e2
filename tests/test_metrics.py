"""Likelihood and latent metrics against closed forms: a linear-Gaussian model whose p(x) is known."""

import math

import pytest
import torch
from torch import nn

from vae_lightning import VAE, MLPDecoder, MLPEncoder
from vae_lightning.errors import UserError
from vae_lightning.evaluation.metrics import (
    ActiveUnits,
    IWBound,
    KLPerDim,
    MutualInformation,
    PixelMarginals,
    iw_log_likelihood,
    mutual_information,
)
from vae_lightning.likelihoods import Gaussian
from vae_lightning.objectives import gaussian_kl

SIGMA = 0.5
W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, -1.0]])  # orthogonal columns: diagonal posterior
B = torch.tensor([0.1, -0.2, 0.3, 0.0])


class LinearGaussian(nn.Module):
    """z ~ N(0, I), x = Wz + b + N(0, σ²I) on 1×2×2 images; p(x) = N(b, WWᵀ + σ²I). The encoder is
    the exact posterior, shifted by ``shift`` (0: exact, and every importance weight equals p(x))."""

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.likelihood = Gaussian(SIGMA)
        precision = torch.eye(2) + W.T @ W / SIGMA**2
        self.post_cov = torch.linalg.inv(precision)  # diagonal by construction
        self.shift = shift
        self.encoder = lambda x: self._encode(x)
        self.decoder = lambda z: (z @ W.T + B).view(-1, 1, 2, 2)

    def _encode(self, x):
        mu = (x.flatten(1) - B) @ W @ self.post_cov / SIGMA**2 + self.shift
        return mu, self.post_cov.diagonal().log().expand_as(mu)

    def log_px(self, x):
        cov = W @ W.T + SIGMA**2 * torch.eye(4)
        return torch.distributions.MultivariateNormal(B, cov).log_prob(x.flatten(1))


def data(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g)
    return (z @ W.T + B + SIGMA * torch.randn(n, 4, generator=g)).view(n, 1, 2, 2)


def test_iw_bound_equals_log_px_with_the_exact_posterior_for_any_k_and_chunking():
    model, x = LinearGaussian(), data(64)
    for k, max_batch in ((1, 2048), (7, 64), (50, 100)):
        torch.testing.assert_close(
            iw_log_likelihood(model, x, k, max_batch=max_batch), model.log_px(x), atol=1e-4, rtol=0
        )


@pytest.mark.slow
def test_iw_bound_is_below_log_px_above_the_elbo_and_tightens_with_k():
    model, x = LinearGaussian(shift=0.2), data(2000)
    torch.manual_seed(0)
    log_px = model.log_px(x).mean()
    mu, logvar = model.encoder(x)
    # the exact ELBO: E_q||x − Wz − b||² = ||x − Wμ − b||² + tr(W Σ Wᵀ)
    sq = (x.flatten(1) - mu @ W.T - B).square().sum(1) + torch.trace(W @ model.post_cov @ W.T)
    elbo = (-0.5 * (4 * math.log(2 * math.pi * SIGMA**2) + sq / SIGMA**2) - gaussian_kl(mu, logvar).sum(1)).mean()
    one = iw_log_likelihood(model, x, 1)
    bounds = [one.mean()] + [iw_log_likelihood(model, x, k, max_batch=4096).mean() for k in (10, 100, 1000)]
    assert abs(bounds[0] - elbo) < 4 * one.std() / math.sqrt(len(x))  # k = 1: a one-sample ELBO
    assert elbo < bounds[1] < bounds[2] < bounds[3] <= log_px + 1e-3
    assert log_px - bounds[3] < 0.1 * (log_px - elbo)  # nearly closed, from a gap of several nats


def test_iw_metric_averages_and_converts_to_bits_per_dim():
    metric = IWBound(num_dims=784)
    metric.update(torch.tensor([100.0, 80.0]))
    metric.update(torch.tensor([90.0]))
    out = metric.compute()
    assert out["nll_iw"].item() == pytest.approx(90.0)
    assert out["bpd"].item() == pytest.approx(90.0 / (784 * math.log(2)))


def test_split_updates_sum_to_the_whole_as_under_ddp():
    """Every state is a sum reduced with "sum": two ranks' states add up to one rank's."""
    torch.manual_seed(0)
    mu, logvar = torch.randn(40, 3) * torch.tensor([1.0, 0.05, 2.0]), torch.randn(40, 3) * 0.1
    for make, args in ((lambda: ActiveUnits(3), (mu,)), (lambda: KLPerDim(3), (mu, logvar))):
        whole, a, b = make(), make(), make()
        whole.update(*args)
        a.update(*(t[:13] for t in args))
        b.update(*(t[13:] for t in args))
        assert set(a._reductions.values()) == {torch.sum} or all(
            f.__name__ == "dim_zero_sum" for f in a._reductions.values()
        )
        for name in a._defaults:
            setattr(a, name, getattr(a, name) + getattr(b, name))
        got, want = a.compute(), whole.compute()
        got, want = (got, want) if isinstance(got, dict) else ({"v": got}, {"v": want})
        for key in want:
            torch.testing.assert_close(got[key], want[key])


def test_pixel_marginals_on_binary_images_are_add_one_smoothed_bernoullis():
    g = torch.Generator().manual_seed(0)
    train = (torch.rand(50, 1, 3, 2, generator=g) < torch.linspace(0, 0.9, 6).view(1, 1, 3, 2)).float()
    model = PixelMarginals((1, 3, 2), binary=True)
    model.update(train[:20])
    model.update(train[20:])  # in pieces, as over batches and DDP ranks
    x = (torch.rand(4, 1, 3, 2, generator=g) < 0.5).float()
    p = (train.sum(0) + 1) / (50 + 2)  # pixel 0 is never on in training: p = 1/52, not 0
    expected = (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    torch.testing.assert_close(model.compute().log_prob(x), expected)


def test_pixel_marginals_on_gray_images_are_normals_with_a_one_grey_level_floor():
    train = torch.rand(40, 2, 2, 2, generator=torch.Generator().manual_seed(1))
    train[:, 0, 0, 0] = 0.5  # a constant pixel: std floored at 1/255, not 0
    model = PixelMarginals((2, 2, 2), binary=False)
    model.update(train)
    x = torch.rand(3, 2, 2, 2)
    mean, std = train.mean(0), train.std(0, unbiased=False).clamp_min(1 / 255)
    expected = torch.distributions.Normal(mean, std).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(model.compute().log_prob(x), expected)


def test_active_units_count_dimensions_whose_posterior_mean_varies():
    torch.manual_seed(0)
    mu = torch.randn(5000, 4) * torch.tensor([1.0, 0.5, 0.05, 0.0]) + 3.0  # variances 1, 0.25, 0.0025, 0
    metric = ActiveUnits(4)
    for chunk in mu.split(700):
        metric.update(chunk)
    out = metric.compute()
    assert out["active_units"].item() == 2
    torch.testing.assert_close(out["mu_var"], mu.double().var(0, unbiased=False).float(), atol=1e-5, rtol=1e-4)


def test_kl_per_dim_is_the_mean_closed_form_kl():
    torch.manual_seed(0)
    mu, logvar = torch.randn(30, 5), torch.randn(30, 5)
    metric = KLPerDim(5)
    metric.update(mu, logvar)
    torch.testing.assert_close(metric.compute(), gaussian_kl(mu, logvar).mean(0))


def test_mutual_information_is_zero_for_a_shared_posterior_and_log_batch_for_separated_ones():
    torch.manual_seed(0)
    same = torch.zeros(256, 4)
    assert abs(mutual_information(same, same).item()) < 0.3
    apart = torch.arange(256.0).unsqueeze(1).repeat(1, 4) * 10
    assert mutual_information(apart, torch.full((256, 4), -4.0)).item() == pytest.approx(
        math.log(256), abs=0.25
    )  # Monte-Carlo noise ~0.1
    metric = MutualInformation()
    metric.update(apart[:128], torch.full((128, 4), -4.0))
    assert metric.compute().item() == pytest.approx(math.log(128), abs=0.25)


def test_iw_samples_below_one_are_refused():
    with pytest.raises(UserError, match="iw_samples"):
        VAE(encoder=MLPEncoder, decoder=MLPDecoder, image_shape=(1, 8, 8), iw_samples=0)


def test_validation_and_test_log_the_latent_metrics():
    model = VAE(encoder=MLPEncoder, decoder=MLPDecoder, latent_dim=3, image_shape=(1, 8, 8), iw_samples=5)
    logged = {}
    model.log = lambda name, value, **kw: logged.__setitem__(name, value)
    x = torch.bernoulli(torch.full((16, 1, 8, 8), 0.3))
    model.test_step((x, None), 0)
    model.on_test_epoch_end()
    assert {"test/nll_iw", "test/bpd", "test/active_units", "test/mi", "test/kl_dim/2", "test/elbo"} <= set(logged)
    assert logged["test/bpd"] == pytest.approx(logged["test/nll_iw"] / (64 * math.log(2)))
    assert model.latent_stats["test"]["kl_per_dim"].shape == (3,)
