"""Priors against independent computations: the standard normal's closed-form KL against Monte
Carlo, the mixture's density against a brute-force sum, the VampPrior against the encoder's own
posteriors at the pseudo-inputs; every consumer of p(z) (IW bound, log_pz, sampling) uses the
prior in use; the MI estimate's bound and noise; and a prior's K < 1 refused."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch

from vae_lightning import VAE, FreeBitsVAE, MLPDecoder, MLPEncoder
from vae_lightning.cli import main
from vae_lightning.errors import UserError
from vae_lightning.evaluation.metrics import iw_log_likelihood, mutual_information
from vae_lightning.evaluation.scoring import anomaly_scores
from vae_lightning.objectives import gaussian_kl
from vae_lightning.priors import MixtureOfGaussians, StandardNormal, VampPrior

FIXTURES = Path(__file__).parent / "fixtures" / "main-2f68d99"
SHAPE = (1, 8, 8)


def model_with(prior, cls=VAE, latent_dim=3):
    return cls(
        encoder=functools.partial(MLPEncoder, hidden=[16]),
        decoder=functools.partial(MLPDecoder, hidden=[16]),
        latent_dim=latent_dim,
        image_shape=SHAPE,
        iw_samples=4,
        prior=prior,
    )


def diag_normal_log_density(z, m, s):
    """log N(z; m, diag s²) written out, float64, for z (N, D) and m, s (D,)."""
    z, m, s = z.double(), m.double(), s.double()
    return (-0.5 * ((z - m) / s).square() - torch.log(s) - 0.5 * math.log(2 * math.pi)).sum(-1)


def test_standard_normal_kl_is_the_closed_form_and_its_monte_carlo_mean():
    torch.manual_seed(0)
    prior = StandardNormal()
    prior.build(4, SHAPE, None)
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4) * 0.5
    kl = prior.kl(mu, logvar, None)
    assert kl.shape == (3, 4)
    var = logvar.exp()
    torch.testing.assert_close(kl, 0.5 * (var + mu.square() - 1 - logvar))  # Kingma & Welling 2014, app. B
    z = mu + var.sqrt() * torch.randn(200_000, 3, 4)
    log_q = diag_normal_log_density(z.view(-1, 4), mu.repeat(200_000, 1), var.sqrt().repeat(200_000, 1)).view(-1, 3)
    mc = (log_q - prior.log_prob(z.view(-1, 4)).double().view(-1, 3)).mean(0)
    torch.testing.assert_close(mc.float(), kl.sum(1), atol=0.02, rtol=0)
    by_hand = diag_normal_log_density(z[0], torch.zeros(4), torch.ones(4)).float()
    torch.testing.assert_close(prior.log_prob(z[0]), by_hand)


def test_mixture_density_is_the_brute_force_sum_over_components():
    torch.manual_seed(0)
    prior = MixtureOfGaussians(num_components=5)
    prior.build(3, SHAPE, None)
    with torch.no_grad():
        prior.logits.copy_(torch.randn(5))
        prior.logvars.copy_(torch.randn(5, 3) * 0.5)
    z = torch.randn(7, 3) * 2
    weights = torch.softmax(prior.logits.double(), 0)
    density = sum(
        weights[k] * diag_normal_log_density(z, prior.means[k], (0.5 * prior.logvars[k]).exp()).exp() for k in range(5)
    )
    torch.testing.assert_close(prior.log_prob(z).double(), density.log(), atol=1e-5, rtol=0)


def test_mixture_monte_carlo_kl_matches_the_gaussian_closed_form_with_one_component():
    """K = 1: p(z) = N(m, s²), whose KL from q has a closed form; the MC column averages to it."""
    torch.manual_seed(0)
    prior = MixtureOfGaussians(num_components=1)
    prior.build(2, SHAPE, None)
    with torch.no_grad():
        prior.means.copy_(torch.tensor([[0.5, -1.0]]))
        prior.logvars.copy_(torch.tensor([[0.4, -0.6]]))
    mu, logvar = torch.tensor([[0.1, 0.2]]), torch.tensor([[-0.5, 0.3]])
    z = mu + (0.5 * logvar).exp() * torch.randn(400_000, 2)
    mc = prior.kl(mu.expand_as(z), logvar.expand_as(z), z).detach()
    assert mc.shape == (400_000, 1)
    p = torch.distributions.Normal(prior.means[0].detach(), (0.5 * prior.logvars[0].detach()).exp())
    closed = torch.distributions.kl_divergence(torch.distributions.Normal(mu[0], (0.5 * logvar[0]).exp()), p).sum()
    assert float(mc.mean()) == pytest.approx(float(closed), abs=0.01)


def test_mixture_samples_have_the_mixture_mean_and_variance():
    torch.manual_seed(0)
    prior = MixtureOfGaussians(num_components=3)
    prior.build(2, SHAPE, None)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
    z = prior.sample(200_000, torch.Generator().manual_seed(0))
    w = torch.softmax(prior.logits.detach(), 0).unsqueeze(1)
    m, var = prior.means.detach(), prior.logvars.detach().exp()
    mean = (w * m).sum(0)
    torch.testing.assert_close(z.mean(0), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(z.var(0), (w * (var + m.square())).sum(0) - mean.square(), atol=0.03, rtol=0)


def test_vamp_prior_is_the_mixture_of_the_encoders_posteriors_at_the_pseudo_inputs():
    torch.manual_seed(0)
    model = model_with(VampPrior(num_components=4))
    prior = model.prior
    z = torch.randn(6, 3)
    densities = []
    for k in range(4):  # one pseudo-input at a time through the model's own encoder
        mu, logvar = model.encoder(torch.sigmoid(prior.pseudo_logits[k : k + 1]))
        densities.append(diag_normal_log_density(z, mu[0], (0.5 * logvar[0]).exp()).exp() / 4)
    torch.testing.assert_close(prior.log_prob(z).double(), torch.stack(densities).sum(0).log(), atol=1e-5, rtol=0)
    # the pseudo-inputs and the encoder both get gradients from log p(z)
    prior.log_prob(z).sum().backward()
    assert prior.pseudo_logits.grad.abs().sum() > 0 and model.encoder.net[0].weight.grad.abs().sum() > 0
    assert not any(k.startswith("prior.encoder") or k.startswith("prior._encoder") for k in model.state_dict())


@pytest.mark.parametrize("prior_cls", [MixtureOfGaussians, VampPrior])
def test_a_learned_prior_reaches_the_record_the_iw_bound_log_pz_and_the_samples(prior_cls):
    torch.manual_seed(0)
    model = model_with(prior_cls(num_components=3))
    x = torch.bernoulli(torch.full((5, *SHAPE), 0.3))
    f = model(x)
    assert f.kl_dims.shape == (5, 1) and f.kl.shape == (5,)
    log_q = diag_normal_log_density(f.z, f.mu, (0.5 * f.logvar).exp())
    torch.testing.assert_close(f.kl.double(), log_q - model.prior.log_prob(f.z).double(), atol=1e-4, rtol=0)
    # k = 1 with the record's draw: log w = −recon + log p(z) − log q(z|x) = −(recon + kl)
    torch.testing.assert_close(iw_log_likelihood(model, x, 1, first=f), -(f.recon + f.kl).detach(), atol=1e-5, rtol=0)
    torch.manual_seed(1)
    scores = anomaly_scores(model, x, 3)
    torch.manual_seed(1)
    g = model(x)
    torch.testing.assert_close(scores["log_pz"], model.prior.log_prob(g.mu).detach())
    expected = model.decode(model.prior.sample(4, torch.Generator().manual_seed(3)))
    torch.testing.assert_close(model.sample(4, torch.Generator().manual_seed(3)), expected, rtol=0, atol=0)
    gaussian = model.decode(torch.randn(4, 3, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(model.sample(4, torch.Generator().manual_seed(3)), gaussian)


def test_the_default_prior_adds_no_state_dict_key_and_keeps_the_closed_form():
    raw = torch.load(FIXTURES / "vae" / "last.ckpt", map_location="cpu", weights_only=False)
    torch.manual_seed(0)
    mlp = functools.partial(MLPEncoder, hidden=[16]), functools.partial(MLPDecoder, hidden=[16])
    nets = {"encoder": mlp[0], "decoder": mlp[1]}
    default = VAE(**nets, latent_dim=3, image_shape=(1, 64, 64))
    assert set(default.state_dict()) == set(raw["state_dict"])
    x = torch.bernoulli(torch.full((4, 1, 64, 64), 0.1))
    f = default(x)
    torch.testing.assert_close(f.kl_dims, gaussian_kl(f.mu, f.logvar), rtol=0, atol=0)


def test_free_bits_refuses_a_prior_without_a_per_dimension_kl():
    with pytest.raises(UserError, match="FreeBitsVAE needs the KL per latent dimension"):
        model_with(VampPrior(num_components=2), cls=FreeBitsVAE)


@pytest.mark.parametrize("prior", ["vae_lightning.MixtureOfGaussians", "vae_lightning.VampPrior"])
def test_a_prior_with_fewer_than_one_component_is_refused_with_one_sentence(prior, capsys, tmp_path):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "fit",
                "--model.init_args.latent_dim",
                "3",
                "--model.init_args.prior",
                prior,
                "--model.init_args.prior.init_args.num_components",
                "0",
                "--trainer.logger",
                "false",
                "--trainer.default_root_dir",
                str(tmp_path),
            ]
        )
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2
    assert "num_components" in err and ">= 1" in err and "got 0" in err and len(err.splitlines()) == 1


def test_every_mi_batch_estimate_is_at_most_log_batch():
    torch.manual_seed(0)
    for batch in (2, 4, 16):
        for _ in range(200):
            mu, logvar = torch.randn(batch, 8) * 3, torch.randn(batch, 8) - 2
            assert mutual_information(mu, logvar).item() <= math.log(batch) + 1e-5


def test_mi_of_a_nearly_collapsed_model_has_a_small_sd():
    """D = 128, B = 4, posteriors almost equal: the closed-form-entropy estimator's sd is about
    √(D/2B) = 4 nats here; with the sampled log q(z_i|x_i) in both terms the noise cancels."""
    torch.manual_seed(0)
    mu0, logvar0 = torch.randn(1, 128), torch.randn(1, 128) * 0.1
    estimates = torch.stack(
        [mutual_information(mu0 + 1e-3 * torch.randn(4, 128), logvar0.expand(4, 128)) for _ in range(300)]
    )
    assert estimates.std() < 0.05 and abs(estimates.mean()) < 0.05


TINY_MOG = """
trainer:
  max_steps: 4
  val_check_interval: 2
  check_val_every_n_epoch: null
  limit_val_batches: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
model:
  class_path: vae_lightning.VAE
  init_args:
    latent_dim: 3
    prior: {class_path: vae_lightning.MixtureOfGaussians, init_args: {num_components: 4}}
    encoder: {class_path: vae_lightning.MLPEncoder, init_args: {hidden: [16]}}
    decoder: {class_path: vae_lightning.MLPDecoder, init_args: {hidden: [16]}}
data:
  class_path: vae_lightning.data.SpritesDataModule
  init_args: {batch_size: 8, num_images: 200, val_size: 40}
images:
  every_n_val: 0
"""


def test_a_prior_from_yaml_trains_says_its_kl_method_and_comes_back_from_the_checkpoint(tmp_path, monkeypatch):
    import logging

    from vae_lightning import load_model

    config = tmp_path / "mog.yaml"
    config.write_text(TINY_MOG)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("lightning.pytorch").addHandler(handler)
    monkeypatch.setenv("WANDB_MODE", "offline")
    try:
        main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "run")])
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    assert any("prior MixtureOfGaussians; KL: Monte Carlo" in r.getMessage() for r in records)
    ckpt = tmp_path / "run" / "checkpoints" / "version_0" / "last.ckpt"
    model = load_model(ckpt)
    raw = torch.load(ckpt, weights_only=False)["state_dict"]
    assert isinstance(model.prior, MixtureOfGaussians) and model.prior.means.shape == (4, 3)
    torch.testing.assert_close(model.prior.means, raw["prior.means"], rtol=0, atol=0)
    assert model.sample(2).shape == (2, 1, 64, 64)

    # `vae traverse` without --image starts from a --seed draw of the learned prior (z = 0 may lie between
    # its components): the grid is the traversal around that draw, and another seed moves it
    from torchvision.io import read_image

    from vae_lightning.cli.pictures import _influence_order
    from vae_lightning.evaluation import pictures

    for seed in (0, 1):
        main(["traverse", str(ckpt), "--out", str(tmp_path / f"seed{seed}.png"), "--seed", str(seed), "--dims", "3"])
    centre = model.prior.sample(1, generator=torch.Generator().manual_seed(0))[0]
    dims = _influence_order(model, centre, 3.0)[:3]
    pictures.save_png(pictures.traversal_grid(model, centre, dims), tmp_path / "expected.png")
    assert torch.equal(read_image(str(tmp_path / "seed0.png")), read_image(str(tmp_path / "expected.png")))
    assert not torch.equal(read_image(str(tmp_path / "seed0.png")), read_image(str(tmp_path / "seed1.png")))
