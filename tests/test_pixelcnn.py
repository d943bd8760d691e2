"""The autoregressive decoder (PixelCNNDecoder): its masking, checked by gradients (output pixel i
depends on no input pixel ≥ i in raster order, and on the pixels above-right that the original
PixelCNN's blind spot misses); the sampler against teacher forcing; the shared context of n draws
of z; the mean pictures; and every `vae` command on a small checkpoint, in process."""

from __future__ import annotations

import csv
import functools
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from vae_lightning import VAE, MLPEncoder
from vae_lightning.cli import main
from vae_lightning.cli.generate import row_progress
from vae_lightning.evaluation.metrics import iw_log_likelihood
from vae_lightning.nets import PixelCNNDecoder, decoder_output
from vae_lightning.objectives import posterior

SHAPE = (1, 28, 28)


def decoder(c: int = 1, layers: int = 3, **kw) -> PixelCNNDecoder:
    args = {"channels": 4, "kernel": 3, "first_kernel": 5, "cond_channels": 4, "cond_net": [8], "cond_hidden": 16}
    return PixelCNNDecoder((c, 28, 28), 4, layers=layers, **{**args, **kw}).double()


def dependence(net: PixelCNNDecoder, c: int) -> torch.Tensor:
    """|∂ out_i / ∂ x_j| summed over channels, (H·W, H·W): row i an output pixel, column j an input pixel."""
    torch.manual_seed(1)
    z = torch.randn(1, 4, dtype=torch.double)
    x = torch.bernoulli(torch.full((1, c, 28, 28), 0.5, dtype=torch.double))
    jac = torch.func.jacrev(lambda xx: net(z, xx))(x)  # (1, C, H, W, 1, C, H, W)
    return jac.reshape(c, 784, c, 784).abs().sum((0, 2))


@pytest.mark.parametrize("c", [1, 2])
def test_output_pixel_i_depends_on_input_pixels_before_i_only(c):
    torch.manual_seed(0)
    net = decoder(c)
    dep = dependence(net, c)
    assert torch.triu(dep).max() == 0  # pixel i (every channel) reads no pixel j >= i, itself included
    r, col = 10, 10
    i = r * 28 + col
    # left, above, and above-right (the original PixelCNN's blind spot) are all seen
    for j in ((r, col - 1), (r - 1, col), (r - 1, col + 1), (r - 2, col + 2), (r - 1, col + 3)):
        assert dep[i, j[0] * 28 + j[1]] > 0, j
    # and nothing beyond the receptive field the decoder says it has
    assert dep[i, (r - net.rows_back - 1) * 28 + col] == 0 and dep[i, r * 28 + col - net.cols_back - 1] == 0
    assert dep[i, (r - net.rows_back) * 28 + col] > 0 and dep[i, r * 28 + col - net.cols_back] > 0


def test_more_layers_see_further():
    torch.manual_seed(0)
    near, far = (dependence(decoder(layers=n), 1)[14 * 28 + 14] > 0 for n in (1, 4))
    assert far.sum() > near.sum() and not (near & ~far).any()


def test_the_sampler_computes_what_teacher_forcing_computes():
    """generate() crops to the receptive field and reuses each row's context; forward() sees the
    whole image at once: the same p(x_i | x_<i, z) for every pixel of the drawn images."""
    torch.manual_seed(0)
    net = decoder(layers=2)
    assert net.rows_back < 27 and net.cols_back < 27  # the crops are exercised
    z = torch.randn(5, 4, dtype=torch.double)
    u = torch.rand(5, 1, 28, 28, dtype=torch.double)
    rows = []
    x, params = net.generate(z, lambda out, r, c: (u[:, :, r : r + 1, c : c + 1] < out.sigmoid()).double(), rows.append)
    assert rows == list(range(28)) and set(x.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(params, net(z, x), rtol=0, atol=1e-12)
    torch.testing.assert_close(x, (u < params.sigmoid()).double(), rtol=0, atol=0)


def test_n_draws_of_z_per_image_share_the_images_context():
    torch.manual_seed(0)
    net = decoder()
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.3, dtype=torch.double))
    z = torch.randn(4 * 3, 4, dtype=torch.double)  # draw-major: row j·3 + b is draw j of image b
    torch.testing.assert_close(net(z, x), net(z, x.repeat(4, 1, 1, 1)), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="7 latents for 3 images"):
        net(z[:7], x)


def tiny_model(**kw) -> VAE:
    torch.manual_seed(0)
    return VAE(
        encoder=functools.partial(MLPEncoder, hidden=[16]),
        decoder=functools.partial(
            PixelCNNDecoder,
            layers=2,
            channels=4,
            kernel=3,
            first_kernel=3,
            cond_channels=4,
            cond_net=[8],
            cond_hidden=16,
        ),
        latent_dim=4,
        image_shape=SHAPE,
        **kw,
    ).eval()


def test_the_record_scores_x_in_one_pass_and_the_iw_bound_is_a_bound():
    model = tiny_model()
    x = torch.bernoulli(torch.full((6, *SHAPE), 0.2))
    torch.manual_seed(3)
    f = model(x)
    expected = -torch.distributions.Bernoulli(logits=model.decoder(f.z, x)).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(f.recon, expected)
    torch.testing.assert_close(f.out, decoder_output(model.decoder, f.z, x))
    torch.manual_seed(4)
    log_w = -f.recon + Normal(0.0, 1.0).log_prob(f.z).sum(1) - posterior(f.mu, f.logvar).log_prob(f.z).sum(1)
    torch.testing.assert_close(iw_log_likelihood(model, x, 1, first=f), log_w)  # k = 1: the record's own draw
    lls = torch.stack([iw_log_likelihood(model, x, 64, max_batch=96) for _ in range(3)])
    assert (lls.mean(0) >= -(f.recon + f.kl) - 5).all()  # k = 64 sits above a one-sample ELBO, on average


@pytest.mark.slow
def test_mean_pictures_are_a_function_of_z_alone():
    model = tiny_model()
    z = torch.randn(3, 4)
    a = model.decode(z)
    torch.testing.assert_close(model.decode(z), a, rtol=0, atol=0)  # no hidden randomness
    torch.testing.assert_close(model.decode(z[1:2]), a[1:2], rtol=0, atol=1e-6)  # nor a dependence on the batch
    assert not torch.equal(a[0], a[1])
    drawn = model.decode(z, draw=True, generator=torch.Generator().manual_seed(0))
    assert set(drawn.unique().tolist()) <= {0.0, 1.0}
    # a decoder that ignores z draws one picture for every z
    with torch.no_grad():
        model.decoder.cond_mix.weight.zero_()
    same = model.decode(torch.randn(4, 4))
    assert all(torch.equal(same[0], s) for s in same[1:])


@pytest.mark.slow
def test_every_command_runs_on_an_autoregressive_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    model = [
        "--model",
        "vae_lightning.VAE",
        "--model.init_args.latent_dim",
        "3",
        "--model.init_args.iw_samples",
        "4",
        "--model.init_args.encoder",
        "vae_lightning.MLPEncoder",
        "--model.init_args.encoder.init_args.hidden",
        "[16]",
        "--model.init_args.decoder",
        "vae_lightning.PixelCNNDecoder",
        "--model.init_args.decoder.init_args.layers",
        "2",
        "--model.init_args.decoder.init_args.channels",
        "4",
        "--model.init_args.decoder.init_args.cond_net",
        "[4]",
        "--model.init_args.decoder.init_args.cond_hidden",
        "8",
    ]
    data = ["--data", "vae_lightning.data.SpritesDataModule", "--data.init_args.num_images", "96"]
    data += ["--data.init_args.val_size", "32", "--data.init_args.batch_size", "16"]
    run = [
        *data,
        "--trainer.default_root_dir",
        "run",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    ]
    images = ["--images.num_images", "4", "--images.traverse_dims", "2", "--images.interpolations", "1"]
    main(["fit", *model, *run, *images, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2"])
    ckpt = "run/checkpoints/version_0/last.ckpt"
    assert sorted(p.name.split("_step")[0] for p in (tmp_path / "run/images/version_0").glob("*.png")) == [
        "interpolations",
        "kl_per_dim",
        "reconstructions",
        "samples",
        "traversals",
    ]
    # evaluations log to CSV: with no logger one writes its own vae_config.yaml over the fit's, beside
    # the checkpoint, and the next evaluation fails on it (a bug of main, reported; not this test's subject)
    evaluate = [
        *data,
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir",
        "csv",
    ]
    evaluate += ["--trainer.enable_progress_bar", "false", "--ckpt_path", ckpt]
    main(["predict", *model, *evaluate, "--trainer.default_root_dir", "pred", "--trainer.limit_predict_batches", "1"])
    rows = list(csv.DictReader(open(tmp_path / "pred/scores.csv")))
    assert len(rows) >= 16 and all(math.isfinite(float(r[k])) for r in rows for k in ("nll_iw", "sq_error", "neg_llr"))
    test = [
        "--trainer.default_root_dir",
        "test",
        "--trainer.limit_test_batches",
        "1",
        "--disentanglement.enabled",
        "false",
    ]
    main(["test", *model, *evaluate, *test])
    assert (tmp_path / "run/checkpoints/version_0/summary.json").read_text().count("test/nll_iw") == 1
    main(["sample", ckpt, "--num", "3", "--out", "grid.png"])
    main(["sample", ckpt, "--num", "3", "--draw", "--out", "drawn.npz"])
    drawn = np.load(tmp_path / "drawn.npz")["images"]
    assert drawn.shape == (3, 1, 64, 64) and set(np.unique(drawn)) <= {0, 255}
    main(["traverse", ckpt, "--dims", "2", "--steps", "3", "--out", "traverse.png"])
    (tmp_path / "data.yaml").write_text(
        "data:\n  class_path: vae_lightning.data.SpritesDataModule\n  init_args: {num_images: 96, val_size: 32}\n"
    )
    main(
        [
            "encode",
            ckpt,
            "--config",
            "data.yaml",
            "--data.init_args.num_images",
            "96",
            "--split",
            "val",
            "--out",
            "z.npz",
        ]
    )
    assert np.load(tmp_path / "z.npz")["mu"].shape[1] == 3
    assert all((tmp_path / name).is_file() for name in ("grid.png", "traverse.png"))


def test_sampling_progress_moves_row_by_row_to_exactly_n_images():
    model = tiny_model()
    updates: list[int] = []

    class Bar:
        def update(self, k: int) -> None:
            updates.append(k)

    model.decode(torch.randn(5, 4), on_row=row_progress(model, 5, Bar()))
    assert len(updates) == 28 and sum(updates) == 5
    assert row_progress(VAE(image_shape=SHAPE, latent_dim=2), 5, Bar()) is None  # a one-pass decoder needs none
