"""The hierarchical VAE (issue 28): each group's KL is the Gaussian KL of its posterior and prior and
the groups sum to the total, which a Monte Carlo estimate through separate top-down passes confirms;
inference and generation share one top-down path; the importance weights are log p(x, z) − log q(z|x)
of the hierarchy; the gradient skip stops after its limit; and the commands work with it (in
process: a tiny model on sprites)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from torch.distributions import kl_divergence

from helpers import REPO, tiny_args, vae
from vae_lightning.errors import UserError
from vae_lightning.evaluation.metrics import iw_log_likelihood
from vae_lightning.hierarchical import HierarchicalVAE
from vae_lightning.objectives import posterior

# 8 × 8 images, groups of 1 × 2 × 2 (top) and 1 × 4 × 4: D = 20
SMALL = functools.partial(
    HierarchicalVAE, groups=[1, 1], channels=8, bottleneck=4, z_channels=1, image_shape=(1, 8, 8), iw_samples=4
)


def small_model(**kwargs) -> HierarchicalVAE:
    torch.manual_seed(0)
    model = SMALL(**kwargs)
    with torch.no_grad():  # away from the zero-initialised prior, so that p(z_l | z_<l) depends on z_<l
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def images(n: int = 6) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(1))


def test_every_group_kl_is_the_gaussian_kl_of_its_posterior_and_prior_and_the_groups_sum_to_the_total():
    model, x = small_model(), images()
    assert model.group_dims == [4, 16] and model.latent_dim == 20
    torch.manual_seed(2)
    f = model(x)
    torch.manual_seed(2)
    p = model.decoder.run(len(x), acts=model.encoder(x), mode="posterior")  # the same draws, written out
    torch.testing.assert_close(f.z, p.z, rtol=0, atol=0)
    expected = kl_divergence(posterior(p.q_mu, p.q_logvar), posterior(p.p_mu, p.p_logvar))  # (B, D)
    torch.testing.assert_close(f.kl_dims, expected, rtol=1e-5, atol=1e-6)
    per_group = model.group_kl(f.kl_dims)
    assert per_group.shape == (6, 2)
    torch.testing.assert_close(per_group.sum(1), f.kl)
    terms = model.objective(f, 10**6, None).terms
    torch.testing.assert_close(terms["kl_group/0"] + terms["kl_group/1"], f.kl.mean())


def test_the_kl_is_an_unbiased_estimate_of_log_q_minus_log_p_through_separate_top_down_passes():
    """E[Σ_l KL_l(x, z_<l)] = E_q[log q(z|x) − log p(z)] (the chain rule of the KL); the right side
    here from z alone: log p(z) by the prior's own pass, log q(z|x) by a pass with z given."""
    model = small_model()
    x = images(2).repeat(3000, 1, 1, 1)  # 3,000 draws for each of 2 images
    with torch.no_grad():
        torch.manual_seed(3)
        f = model(x)
        log_p = model.prior.log_prob(f.z)
        given = model.decoder.run(len(x), acts=model.encoder(x), mode="given", z=f.z)
        log_q = posterior(given.q_mu, given.q_logvar).log_prob(f.z).sum(1)
    mc, analytic = (log_q - log_p).view(3000, 2), f.kl.view(3000, 2)
    error = 4 * (mc - analytic).std(0) / math.sqrt(3000)
    assert ((mc.mean(0) - analytic.mean(0)).abs() < error).all(), (mc.mean(0), analytic.mean(0), error)
    assert analytic.mean() > 1.0  # not a trivially zero KL


def test_inference_and_generation_share_the_top_down_path():
    model, x = small_model(), images()
    with torch.no_grad():
        f = model(x)
        again = model.decoder.run(len(x), mode="given", z=f.z)  # no bottom-up activations
        torch.testing.assert_close(again.out, f.out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.decoder(f.z), f.out, rtol=1e-5, atol=1e-5)
        g = torch.Generator().manual_seed(4)
        z = model.prior_latents(5, g)
        assert z.shape == (5, 20) and torch.equal(z, model.prior_latents(5, torch.Generator().manual_seed(4)))
        cold = model.prior_latents(2, g, temperature=0.0)  # every group at its prior mean: one path
        torch.testing.assert_close(cold[0], cold[1], rtol=0, atol=0)
        mu, logvar = model.encode(x)
        mean_path = model.decoder.run(len(x), acts=model.encoder(x), mode="given", z=mu)
        torch.testing.assert_close(mean_path.q_mu, mu, rtol=1e-5, atol=1e-5)  # each group's mean given the means


def test_the_importance_weights_are_log_p_x_z_minus_log_q_of_the_hierarchy():
    model, x = small_model(), images(3)
    with torch.no_grad():
        torch.manual_seed(5)
        log_w = model.draw_log_weights(x, 4)  # (4, 3)
        torch.manual_seed(5)
        z = model.decoder.run(12, acts=[a.repeat(4, 1, 1, 1) for a in model.encoder(x)], mode="posterior").z
        xs = x.repeat(4, 1, 1, 1)
        log_px = model.likelihood.log_prob(model.decoder(z), xs)
        given = model.decoder.run(12, acts=[a.repeat(4, 1, 1, 1) for a in model.encoder(x)], mode="given", z=z)
        log_q = posterior(given.q_mu, given.q_logvar).log_prob(z).sum(1)
        expected = (log_px + model.prior.log_prob(z) - log_q).view(4, 3)
        torch.testing.assert_close(log_w, expected, rtol=1e-5, atol=1e-4)
        # the bound: k = 1 is the ELBO in expectation, and it tightens with k
        x = images(2).repeat(500, 1, 1, 1)
        f = model(x)
        one = iw_log_likelihood(model, x, 1).view(500, 2).mean(0)
        elbo = -(f.recon + f.kl).view(500, 2).mean(0)
        assert ((one - elbo).abs() < 4 * (f.recon + f.kl).view(500, 2).std(0) / math.sqrt(500)).all()
        many = iw_log_likelihood(model, x[:2], 400)
        assert (many > elbo).all()


def test_free_bits_hold_each_group_at_lambda():
    model = small_model(free_bits=50.0)
    f = model(images())
    loss = model.objective(f, 10**6, None).loss
    per_group = model.group_kl(f.kl_dims).mean(0)
    torch.testing.assert_close(loss, f.recon.mean() + per_group.clamp(min=50.0).sum())
    with pytest.raises(UserError, match="free_bits must be >= 0"):
        SMALL(free_bits=-1.0)
    with pytest.raises(UserError, match="side divides by 16"):
        SMALL(stem=3)


# ---- through `vae`, in process --------------------------------------------------------------------
# the tiny run (tests/fixtures/tiny.yaml) with a hierarchical model, pictures and one metric on few points: the
# mean-path codes reach it; the whole protocol takes minutes
HIERARCHICAL = "{class_path: vae_lightning.HierarchicalVAE, init_args: {groups: [1, 1], stem: 3, channels: 8, "
HIERARCHICAL += "bottleneck: 4, z_channels: 1, iw_samples: 3}}"
TINY = tiny_args(
    model=HIERARCHICAL,
    trainer__limit_test_batches=1,
    trainer__limit_predict_batches=1,
    images__every_n_val=1,
    images__num_images=8,
    images__interpolations=2,
    disentanglement__metrics=["mig"],
    disentanglement__num_points=500,
)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny hierarchical model on sprites (64 px: groups of 1 × 4 × 4 and 1 × 8 × 8, D = 80)."""
    base = tmp_path_factory.mktemp("hierarchical")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setattr("sys.argv", ["vae"])
        from vae_lightning.cli import main

        main(["fit", *TINY, "--trainer.default_root_dir", str(base / "run")])
    ckpt = base / "run" / "checkpoints" / "version_0" / "last.ckpt"
    assert ckpt.is_file()
    return TINY, base / "run", ckpt


def test_fit_logs_the_kl_and_the_active_units_of_every_group(fitted):
    _, root, _ = fitted
    header = (root / "checkpoints" / "version_0" / "history.csv").read_text().splitlines()[0].split(",")
    for name in ("train/kl_group/0", "train/kl_group/1", "val/kl_group/1", "val/active_units_group/0"):
        assert name in header, name
    pictures = {p.name.split("_step")[0] for p in (root / "images" / "version_0").glob("*.png")}
    assert pictures == {"reconstructions", "samples", "traversals", "interpolations", "kl_per_dim"}


def test_predict_and_test_work_with_the_hierarchy(fitted, capsys, tmp_path):
    # with a logger: an evaluation with `logger: false` writes its config over the fit's vae_config.yaml
    # beside the checkpoint (it inherits checkpoint.dirpath), and the next evaluation reads that
    config, root, ckpt = fitted
    config = [*config, "--config", str(REPO / "configs" / "logger" / "csv.yaml")]
    out = tmp_path / "scores.csv"
    run = [*config, "--trainer.default_root_dir", str(root), "--ckpt_path", str(ckpt)]
    code, err = vae(capsys, "predict", *run, "--scores.path", str(out), "--scores.background_images", "16")
    assert code == 0, err[-2000:]
    rows = out.read_text().splitlines()
    assert len(rows) > 8 and "nll_iw" in rows[0] and "nan" not in out.read_text()
    code, err = vae(capsys, "test", *run)
    assert code == 0, err[-2000:]
    summary = (ckpt.parent / "summary.json").read_text()
    for key in ("test/nll_iw", "test/kl_group/1", "test/active_units_group/1", "test/kl_dim/79", "test/mi", "test/mig"):
        assert f'"{key}"' in summary, key


def test_encode_writes_every_group_or_the_one_named(fitted, capsys, tmp_path):
    config, _, ckpt = fitted
    common = ["encode", str(ckpt), *config[:2], "--split", "val"]  # encode reads the YAML's data block only
    assert vae(capsys, *common, "--out", str(tmp_path / "all.npz"), "--sample")[0] == 0
    every = np.load(tmp_path / "all.npz")
    assert every["mu"].shape == every["z"].shape == (40, 80)
    assert every["group"].tolist() == [0] * 16 + [1] * 64
    assert vae(capsys, *common, "--out", str(tmp_path / "one.npz"), "--group", "1")[0] == 0
    one = np.load(tmp_path / "one.npz")
    assert one["mu"].shape == (40, 64) and "group" not in one
    np.testing.assert_array_equal(one["mu"], every["mu"][:, 16:])
    code, err = vae(capsys, *common, "--out", str(tmp_path / "bad.npz"), "--group", "2")
    assert code == 2 and "--group 2" in err and "groups 0 to 1" in err and not (tmp_path / "bad.npz").exists()


def test_pictures_traverse_a_group_and_sample_from_the_hierarchy(fitted, capsys, tmp_path):
    _, _, ckpt = fitted
    out = tmp_path / "top.png"
    assert vae(capsys, "traverse", str(ckpt), "--group", "0", "--dims", "3", "--out", str(out))[0] == 0
    assert out.is_file()
    code, err = vae(capsys, "traverse", str(ckpt), "--group", "3", "--out", str(tmp_path / "no.png"))
    assert code == 2 and "--group 3" in err and not (tmp_path / "no.png").exists()
    assert vae(capsys, "sample", str(ckpt), "--num", "5", "--out", str(tmp_path / "s.npz"))[0] == 0
    drawn = np.load(tmp_path / "s.npz")
    assert drawn["images"].shape == (5, 1, 64, 64) and drawn["z"].shape == (5, 80)
    cooler = ["--num", "4", "--temperature", "0.5", "--out", str(tmp_path / "t.png")]
    assert vae(capsys, "sample", str(ckpt), *cooler)[0] == 0


def test_the_gradient_skip_stops_after_its_limit_with_one_line(fitted, capsys, tmp_path):
    """Every step's gradient norm is above the threshold: VDVAE would skip every update in silence;
    here three are skipped, the fourth stops the fit, and no update ever reached the optimizer."""
    config, _, _ = fitted
    root = tmp_path / "run"
    with pytest.warns(UserWarning, match="skipped this step") as warned:
        skip = ["--trainer.max_steps", "20", "--nonfinite.max_grad_norm", "1e-6", "--nonfinite.max_skips", "3"]
        code, err = vae(capsys, "fit", *config, "--trainer.default_root_dir", str(root), *skip)
    lines = [line for line in err.splitlines() if line.startswith("vae: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "global step 3 after skipping 3 bad steps: gradient norm" in lines[0], lines[0]
    assert "> nonfinite.max_grad_norm=1e-06" in lines[0] and "raise --nonfinite.max_grad_norm" in lines[0]
    skips = [str(w.message) for w in warned if "skipped this step" in str(w.message)]
    assert len(skips) == 3 and all("gradient norm" in m for m in skips), skips
    last = torch.load(root / "checkpoints" / "version_0" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 3 and last["optimizer_states"][0]["state"] == {}  # Adam never stepped
