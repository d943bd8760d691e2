"""The disentanglement_lib models and IWAE against independent computations of their papers'
formulas: DIP-VAE-I/II (Kumar et al. 2018), IWAE and DReG (Burda et al. 2015, Tucker et al.
2019), FactorVAE (Kim & Mnih 2018): the dimension permutation, the TC estimate, manual
optimization with two optimizers (its exact resume: test_resume.py); and the bad inputs each refuses."""

from __future__ import annotations

import functools
import math
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal

import vae_lightning.variants as variants
from vae_lightning import LinearWarmup, MLPDecoder, MLPEncoder
from vae_lightning.data import SpritesDataModule
from vae_lightning.errors import UserError
from vae_lightning.models import ForwardRecord
from vae_lightning.runtime.checkpoint import check_fits_model, load_model


def tiny(cls, **kw):
    return cls(
        encoder=functools.partial(MLPEncoder, hidden=[16]),
        decoder=functools.partial(MLPDecoder, hidden=[16]),
        latent_dim=3,
        image_shape=(1, 64, 64),
        iw_samples=3,
        **kw,
    )


# ---- DIP-VAE -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["i", "ii"])
def test_dip_vae_penalty_is_kumar_et_al_s(kind):
    """Eq. 6 (Cov of the posterior means) and eq. 7 (plus the mean posterior variance), with
    numpy's covariance and explicit sums over i ≠ j and over i."""
    torch.manual_seed(0)
    mu, logvar = torch.randn(50, 4) * torch.tensor([1.0, 0.5, 2.0, 0.1]), torch.randn(50, 4) * 0.3
    mu[:, 1] += 0.7 * mu[:, 0]
    recon = torch.rand(50) * 100
    kl_dims = 0.5 * (mu.square() + logvar.exp() - 1 - logvar)
    f = ForwardRecord(None, mu, logvar, mu, None, recon, kl_dims)
    model = tiny(variants.DIPVAE, kind=kind, lambda_od=3.0, lambda_d=7.0)
    result = model.objective(f, 0, None)

    c = np.cov(mu.double().numpy(), rowvar=False, bias=True)
    if kind == "ii":
        c = c + np.diag(np.exp(logvar.double().numpy()).mean(0))
    off = sum(c[i, j] ** 2 for i in range(4) for j in range(4) if i != j)
    diag = sum((c[i, i] - 1) ** 2 for i in range(4))
    assert float(result.terms["dip_od"]) == pytest.approx(off, rel=1e-4)
    assert float(result.terms["dip_d"]) == pytest.approx(diag, rel=1e-4)
    expected = recon.double().mean() + kl_dims.double().sum(1).mean() + 3.0 * off + 7.0 * diag
    assert float(result.loss) == pytest.approx(float(expected), rel=1e-4)


def test_dip_vae_default_lambda_d_follows_disentanglement_lib():
    assert tiny(variants.DIPVAE, kind="i", lambda_od=2.0).lambda_d == 20.0
    assert tiny(variants.DIPVAE, kind="ii", lambda_od=2.0).lambda_d == 2.0
    with pytest.raises(UserError, match=r"model.init_args.kind must be 'i'.*got 'iii'"):
        tiny(variants.DIPVAE, kind="iii")


# ---- IWAE ----------------------------------------------------------------------------------
def iwae_run(dreg: bool, k: int = 4):
    """The model's loss and gradients for one batch, and the same batch's noise."""
    torch.manual_seed(0)
    model = tiny(variants.IWAE, k=k, dreg=dreg)
    x = torch.bernoulli(torch.full((5, 1, 64, 64), 0.2))
    torch.manual_seed(1)
    loss = model.objective(model(x), 0, None).loss
    loss.backward()
    return model, x, loss, {n: p.grad.clone() for n, p in model.named_parameters()}


def reference(model, x, k: int, dreg: bool):
    """Burda et al.'s bound and Tucker et al.'s estimator written out with torch.distributions,
    with the noise drawn in the model's order (one z per example, then k − 1 more)."""
    model.zero_grad()
    torch.manual_seed(1)
    mu, logvar = model.encoder(x)
    q = Normal(mu, (0.5 * logvar).exp())
    z = torch.cat([q.rsample()[None], q.rsample((k - 1,))])  # (k, B, D)
    q_w = Normal(mu.detach(), (0.5 * logvar.detach()).exp()) if dreg else q
    log_px = Bernoulli(logits=model.decoder(z.flatten(0, 1))).log_prob(x.repeat(k, 1, 1, 1)).flatten(1).sum(1)
    log_w = log_px.view(k, -1) + Normal(0.0, 1.0).log_prob(z).sum(-1) - q_w.log_prob(z).sum(-1)
    bound = (torch.logsumexp(log_w, 0) - math.log(k)).mean()
    decoder = dict(model.decoder.named_parameters())
    encoder = dict(model.encoder.named_parameters())
    dec = torch.autograd.grad(-bound, list(decoder.values()), retain_graph=True)
    grads = dict(zip((f"decoder.{n}" for n in decoder), dec, strict=True))
    if dreg:  # eq. 7: −Σ_i w̃_i² ∂log w_i/∂z_i ∂z_i/∂φ, averaged over the batch
        dlogw_dz = torch.autograd.grad(log_w.sum(), z, retain_graph=True)[0]
        w = torch.softmax(log_w.detach(), 0)
        surrogate = -((w.square().unsqueeze(-1) * dlogw_dz).detach() * z).sum() / x.shape[0]
        enc = torch.autograd.grad(surrogate, list(encoder.values()))
    else:
        enc = torch.autograd.grad(-bound, list(encoder.values()))
    grads.update(zip((f"encoder.{n}" for n in encoder), enc, strict=True))
    return bound, grads


@pytest.mark.parametrize("dreg", [False, True], ids=["iwae", "dreg"])
def test_iwae_bound_and_gradients_match_the_formulas(dreg):
    model, x, loss, grads = iwae_run(dreg)
    bound, expected = reference(model, x, 4, dreg)
    torch.testing.assert_close(loss, -bound, rtol=1e-5, atol=1e-4)
    assert expected.keys() == grads.keys()
    for name in grads:  # float32 sums in another order: 1e-4 of the largest entry
        scale = float(expected[name].abs().max())
        torch.testing.assert_close(grads[name], expected[name], rtol=1e-3, atol=1e-4 * scale, msg=name)


def test_dreg_changes_only_the_encoders_gradient():
    _, _, loss_plain, plain = iwae_run(False)
    _, _, loss_dreg, dreg = iwae_run(True)
    torch.testing.assert_close(loss_plain, loss_dreg)  # the same bound, only its gradient differs
    for name in plain:
        if name.startswith("decoder."):
            torch.testing.assert_close(plain[name], dreg[name], rtol=1e-5, atol=1e-7)
    assert not torch.allclose(plain["encoder.net.0.weight"], dreg["encoder.net.0.weight"], rtol=1e-3)


def test_iwae_with_one_sample_is_the_one_sample_elbo():
    model, x, loss, _ = iwae_run(False, k=1)
    torch.manual_seed(1)
    f = model(x)
    q, p = Normal(f.mu, (0.5 * f.logvar).exp()), Normal(0.0, 1.0)
    expected = (f.recon + (q.log_prob(f.z) - p.log_prob(f.z)).sum(1)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-4)


def test_iwae_refuses_k_below_one_and_a_kl_schedule():
    with pytest.raises(UserError, match=r"model.init_args.k must be >= 1.*got 0"):
        tiny(variants.IWAE, k=0)
    with pytest.raises(UserError, match=r"model.init_args.kl_schedule"):
        tiny(variants.IWAE, kl_schedule=LinearWarmup(100))


# ---- FactorVAE -----------------------------------------------------------------------------
def test_permute_dims_keeps_every_marginal_and_breaks_the_dependence():
    torch.manual_seed(0)
    a = torch.randn(5000)
    z = torch.stack([a, a + 0.1 * torch.randn(5000), torch.randn(5000)], 1)  # columns 0 and 1 correlated
    shuffled = variants.permute_dims(z)
    for u in range(3):
        torch.testing.assert_close(shuffled[:, u].sort().values, z[:, u].sort().values, rtol=0, atol=0)
        assert (shuffled[:, u] != z[:, u]).float().mean() > 0.99  # each column really moved
    assert torch.corrcoef(z.T)[0, 1] > 0.99
    assert abs(torch.corrcoef(shuffled.T)[0, 1]) < 0.05


@pytest.mark.slow
def test_discriminator_tc_estimate_approaches_the_closed_form():
    """A discriminator trained on z ~ N(0, C) against permute_dims(z) learns log q(z)/Π q(z_u);
    its mean over q is the TC, −½ log(1 − ρ²) = 0.511 nats for ρ = 0.8."""
    torch.manual_seed(0)
    model = tiny(variants.FactorVAE, disc_hidden=8, disc_layers=2)
    model.discriminator = variants.Discriminator(2, 32, 3)  # for 2-dimensional z
    opt = torch.optim.Adam(model.discriminator.parameters(), lr=1e-3)
    gauss = torch.distributions.MultivariateNormal(torch.zeros(2), torch.tensor([[1.0, 0.8], [0.8, 1.0]]))
    for _ in range(600):
        opt.zero_grad()
        model.disc_loss(gauss.sample((512,))).backward()
        opt.step()
    z = gauss.sample((20000,))
    f = ForwardRecord(None, z, torch.zeros_like(z), z, None, torch.zeros(len(z)), torch.zeros_like(z))
    with torch.no_grad():
        tc = float(model.objective(f, 0, None).terms["tc"])
    assert tc == pytest.approx(-0.5 * math.log(1 - 0.8**2), abs=0.1)


def test_factor_vae_steps_both_optimizers_and_checkpoints_their_states(tmp_path):
    L.seed_everything(0)
    dm = SpritesDataModule(batch_size=16, val_size=32, num_images=256)
    model = tiny(variants.FactorVAE, disc_hidden=32, disc_layers=3)
    before = {n: p.detach().clone() for n, p in model.discriminator.named_parameters()}
    trainer = L.Trainer(
        max_steps=6,
        val_check_interval=3,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 6  # VAE steps only: the discriminator's step does not count
    assert all(not torch.equal(p, before[n]) for n, p in model.discriminator.named_parameters())
    ckpt = torch.load(
        trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path, weights_only=False
    )
    vae_state, disc_state = ckpt["optimizer_states"]
    n_vae = sum(1 for n, _ in model.named_parameters() if not n.startswith("discriminator."))
    assert len(vae_state["state"]) == n_vae and len(disc_state["state"]) == len(before)
    assert {float(s["step"]) for s in disc_state["state"].values()} == {6.0}
    assert disc_state["param_groups"][0]["betas"] == (0.5, 0.9)


def test_factor_vae_discriminator_is_kim_and_mnih_s():
    """Six hidden layers of 1000 units plus the output layer (Kim & Mnih 2018, disentanglement_lib's
    fc_discriminator); ``disc_layers`` counts the hidden layers."""
    widths = [m.out_features for m in variants.Discriminator(10).net if isinstance(m, torch.nn.Linear)]
    assert widths == [1000] * 6 + [2]
    slopes = {m.negative_slope for m in variants.Discriminator(10).net if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.2}
    default = tiny(variants.FactorVAE).discriminator
    assert [m.out_features for m in default.net if isinstance(m, torch.nn.Linear)] == [1000] * 6 + [2]
    small = tiny(variants.FactorVAE, disc_hidden=8, disc_layers=2).discriminator
    assert [m.out_features for m in small.net if isinstance(m, torch.nn.Linear)] == [8, 8, 2]
    assert variants.Discriminator.hidden_layers({f"discriminator.{k}": v for k, v in small.state_dict().items()}) == 2


# written by `vae fit` on main at 860c9ef (tiny MLP nets, disc_hidden 8, 6 steps): `disc_layers: 6`
# saved, 5 hidden layers built, as every FactorVAE checkpoint before issue 27
OLD_FACTOR_VAE = Path(__file__).parent / "fixtures" / "main-860c9ef" / "factor_vae"


def test_an_old_factor_vae_checkpoint_loads_with_the_layers_its_weights_have():
    raw = torch.load(OLD_FACTOR_VAE / "last.ckpt", map_location="cpu", weights_only=False)
    assert raw["hyper_parameters"]["disc_layers"] == 6
    model = load_model(OLD_FACTOR_VAE / "last.ckpt")  # vae sample / traverse / interpolate / encode
    assert model.disc_layers == 5
    widths = [m.out_features for m in model.discriminator.net if isinstance(m, torch.nn.Linear)]
    assert widths == [8] * 5 + [2]
    for key, value in raw["state_dict"].items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_an_old_factor_vae_checkpoint_is_refused_in_one_line_by_test_and_fit(tmp_path, capsys):
    from vae_lightning.cli import main

    run = tmp_path / "old"
    shutil.copytree(OLD_FACTOR_VAE, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["test", "--ckpt_path", str(run / "last.ckpt"), "--trainer.default_root_dir", str(tmp_path / "t")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code != 0
    assert "holds weights for disc_layers=5 but the configured model has disc_layers=6" in err, err
    assert "--model.init_args.disc_layers 5" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before and not (tmp_path / "t").exists()
    # as told, it fits
    check_fits_model(str(run / "last.ckpt"), tiny8(disc_layers=5))
    with pytest.raises(UserError, match=r"disc_layers=5 but the configured model has disc_layers=6"):
        check_fits_model(str(run / "last.ckpt"), tiny8())


def tiny8(**kw):
    """The fixture's nets: MLPs of 8 hidden units, 3 latents, disc_hidden 8."""
    return variants.FactorVAE(
        encoder=functools.partial(MLPEncoder, hidden=[8]),
        decoder=functools.partial(MLPDecoder, hidden=[8]),
        latent_dim=3,
        image_shape=(1, 64, 64),
        disc_hidden=8,
        **kw,
    )


def test_factor_vae_refuses_automatic_optimization():
    model = tiny(variants.FactorVAE, disc_hidden=8, disc_layers=2)
    model.automatic_optimization = False  # allowed: it is what FactorVAE does
    with pytest.raises(UserError, match=r"FactorVAE trains its discriminator.*automatic_optimization cannot be True"):
        model.automatic_optimization = True
    assert model.automatic_optimization is False
