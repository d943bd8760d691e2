"""The objective's pieces against independent computations."""

import math

import pytest
import torch

from vae_lightning.likelihoods import Bernoulli, Gaussian, LearnedGaussian
from vae_lightning.objectives import Constant, Cyclical, LinearWarmup, gaussian_kl, gaussian_kl_pair


def test_closed_form_kl_matches_monte_carlo():
    # KL(q || p) = E_q[log q(z) - log p(z)], estimated with 400,000 samples per dimension.
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([[0.0, 1.5, -2.0, 0.3]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, -1.0, 0.7, -3.0]], dtype=torch.float64)
    n = 400_000
    std = (0.5 * logvar).exp()
    z = mu + std * torch.randn(n, 4, generator=g, dtype=torch.float64)
    log_q = -0.5 * (((z - mu) / std) ** 2 + logvar + math.log(2 * math.pi))
    log_p = -0.5 * (z**2 + math.log(2 * math.pi))
    mc = (log_q - log_p).mean(0)
    se = (log_q - log_p).std(0) / math.sqrt(n)
    closed = gaussian_kl(mu.float(), logvar.float())[0].double()
    # within 5 standard errors of the Monte-Carlo estimate (and 0.01 nats)
    assert torch.all((closed - mc).abs() < 5 * se + 1e-3), (closed, mc, se)
    # and the textbook formula 0.5 (mu² + σ² − 1 − log σ²)
    textbook = 0.5 * (mu**2 + logvar.exp() - 1 - logvar)
    torch.testing.assert_close(closed, textbook[0], rtol=1e-5, atol=1e-6)


def test_the_kl_between_two_gaussians_matches_monte_carlo_and_torch():
    """The KL of a hierarchical group, whose prior is a Gaussian of its own: against 200,000 draws
    of log q − log p, against torch's Normal–Normal KL, 0 for equal Gaussians, gaussian_kl for N(0, 1)."""
    torch.manual_seed(0)
    mu_q, lv_q, mu_p, lv_p = torch.randn(4, 5).unbind(0)
    q, p = (torch.distributions.Normal(m, (0.5 * lv).exp()) for m, lv in ((mu_q, lv_q), (mu_p, lv_p)))
    kl = gaussian_kl_pair(mu_q, lv_q, mu_p, lv_p)
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    assert torch.allclose(kl, mc, atol=0.03), (kl, mc)
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p))
    torch.testing.assert_close(gaussian_kl_pair(mu_q, lv_q, mu_q, lv_q), torch.zeros(5))
    zeros = torch.zeros(5)
    torch.testing.assert_close(gaussian_kl_pair(mu_q, lv_q, zeros, zeros), gaussian_kl(mu_q[None], lv_q[None])[0])


def test_kl_is_zero_at_the_prior_and_finite_for_extreme_logvar():
    assert gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() < 1e-7
    extreme = gaussian_kl(torch.zeros(1, 2), torch.tensor([[-1e4, 1e4]]))
    assert torch.isfinite(extreme).all()


def test_kl_in_bf16_inputs_is_computed_in_float32():
    mu, logvar = torch.randn(8, 4), torch.randn(8, 4)
    kl16 = gaussian_kl(mu.bfloat16(), logvar.bfloat16())
    assert kl16.dtype == torch.float32
    torch.testing.assert_close(kl16, gaussian_kl(mu.bfloat16().float(), logvar.bfloat16().float()))


def test_bernoulli_log_prob_is_the_summed_binary_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 1, 4, 4, generator=g)
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.3), generator=g)
    p = torch.sigmoid(logits)
    expected = (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    torch.testing.assert_close(Bernoulli().log_prob(logits, x), expected, rtol=1e-5, atol=1e-5)


def test_gaussian_log_prob_matches_the_density_formula():
    mean, x = torch.rand(3, 2, 4, 4), torch.rand(3, 2, 4, 4)
    sigma = 0.2
    expected = (-0.5 * ((x - mean) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    torch.testing.assert_close(Gaussian(sigma).log_prob(mean, x), expected)


def test_learned_gaussian_has_one_sigma_per_channel_and_learns_it():
    lik = LearnedGaussian(init_sigma=0.5)
    lik.build((3, 4, 4))
    assert lik.log_sigma.shape == (3,)
    torch.testing.assert_close(lik.sigma, torch.full((3,), 0.5))
    mean = torch.zeros(2, 3, 4, 4)
    x = 0.01 * torch.randn(2, 3, 4, 4)
    (-lik.log_prob(mean, x).sum()).backward()
    assert (lik.log_sigma.grad > 0).all()  # data much tighter than σ: the NLL wants σ smaller


def test_schedules_at_chosen_steps():
    assert Constant(0.3)(0) == Constant(0.3)(10**6) == 0.3
    warm = LinearWarmup(steps=100, start=0.0, end=1.0)
    assert [warm(s) for s in (0, 25, 100, 500)] == [0.0, 0.25, 1.0, 1.0]
    cyc = Cyclical(total_steps=400, n_cycles=4, ratio=0.5, max_weight=1.0)  # period 100, ramp 50
    assert [cyc(s) for s in (0, 25, 50, 99, 100, 125, 350, 399, 400, 1000)] == [
        0.0,
        0.5,
        1.0,
        1.0,
        0.0,
        0.5,
        1.0,
        1.0,
        1.0,
        1.0,
    ]


@pytest.mark.parametrize("bad", [lambda: Constant(-1), lambda: LinearWarmup(0), lambda: Cyclical(ratio=0)])
def test_schedules_reject_bad_values(bad):
    with pytest.raises(ValueError):
        bad()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_written_out_kl_is_bitwise_torchs_normal_normal_kl_in_value_and_gradient(dtype):
    from torch.distributions import Normal, kl_divergence

    from vae_lightning.objectives import posterior

    g = torch.Generator().manual_seed(0)
    base = (3 * torch.randn(64, 10, generator=g), 4 * torch.randn(64, 10, generator=g))
    results = []
    for ours in (True, False):
        mu, logvar = (t.to(dtype).requires_grad_() for t in base)
        if ours:
            kl = gaussian_kl(mu, logvar)
        else:
            q = posterior(mu, logvar)
            kl = kl_divergence(q, Normal(torch.zeros_like(q.loc), torch.ones_like(q.scale)))
        kl.sum(1).mean().backward()
        results.append((kl, mu.grad, logvar.grad))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_the_model_step_compiles_without_a_graph_break():
    import torch._dynamo

    from vae_lightning import VAE, MLPDecoder, MLPEncoder

    model = VAE(encoder=MLPEncoder, decoder=MLPDecoder, latent_dim=2, image_shape=(1, 4, 4))
    x = torch.bernoulli(torch.full((8, 1, 4, 4), 0.3))
    explanation = torch._dynamo.explain(type(model).forward)(model, x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
