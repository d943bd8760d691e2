"""The three objectives: β = 1 is the VAE, capacity and free bits behave as their papers say."""

import pytest
import torch

from vae_lightning import VAE, BetaVAE, ConvEncoder, FreeBitsVAE, Gaussian, LinearWarmup, MLPDecoder, MLPEncoder
from vae_lightning.callbacks import NonFiniteGuard
from vae_lightning.errors import UserError
from vae_lightning.models import ForwardRecord
from vae_lightning.objectives import gaussian_kl

SHAPE = (1, 8, 8)


def make(cls=VAE, **kw):
    torch.manual_seed(0)
    return cls(encoder=MLPEncoder, decoder=MLPDecoder, latent_dim=4, image_shape=SHAPE, **kw)


def loss_of(model, x, step=0):
    model.log = lambda *a, **k: None  # no trainer here
    torch.manual_seed(1)
    return model._step((x, None), "train")[0].loss


def record(kl_dims, recon=None):
    """A forward record that carries only what the KL objectives read."""
    recon = torch.zeros(kl_dims.shape[0]) if recon is None else recon
    return ForwardRecord(None, None, None, None, None, recon, kl_dims)


def kl_term(model, kl_dims, step=0):
    """The variant's regularizer: its loss on a record with recon = 0."""
    return model.objective(record(kl_dims), step, None).loss


def test_beta_one_gives_the_vae_loss():
    x = torch.bernoulli(torch.full((16, *SHAPE), 0.4))
    torch.testing.assert_close(loss_of(make(VAE), x), loss_of(make(BetaVAE, beta=1.0), x))


def test_beta_scales_only_the_kl():
    x = torch.bernoulli(torch.full((16, *SHAPE), 0.4))
    vae, beta = make(VAE), make(BetaVAE, beta=3.0)
    torch.manual_seed(1)
    f = vae(x)
    expected = f.recon.mean() + 3.0 * f.kl.mean()
    torch.testing.assert_close(loss_of(beta, x), expected)


def test_capacity_rises_linearly_and_enters_as_an_absolute_gap():
    model = make(BetaVAE, c_max=20.0, c_steps=100, gamma=10.0)
    assert [model.capacity(s) for s in (0, 50, 100, 1000)] == [0.0, 10.0, 20.0, 20.0]
    kl = torch.full((4, 4), 1.0)  # per-example KL = 4 nats
    model.log = lambda *a, **k: None
    torch.testing.assert_close(kl_term(model, kl), torch.tensor(10.0 * 4.0))  # step 0: C = 0


def test_free_bits_gradient_is_zero_below_lambda_and_the_vaes_above():
    lam = 0.5
    fb, vae = make(FreeBitsVAE, free_bits=lam), make(VAE)
    # dimension 0 and 2 carry batch-mean KL well above λ, dimensions 1 and 3 well below
    mu = torch.tensor([[2.0, 0.1, -1.5, 0.05], [1.0, -0.1, -2.0, 0.0]], requires_grad=True)
    logvar = torch.tensor([[-1.0, 0.0, -0.5, 0.1], [-2.0, 0.1, -1.0, 0.0]], requires_grad=True)
    kl = gaussian_kl(mu, logvar)
    batch_mean = kl.mean(0)
    assert (batch_mean[[0, 2]] > lam).all() and (batch_mean[[1, 3]] < lam).all()
    g_fb = torch.autograd.grad(kl_term(fb, kl), (mu, logvar), retain_graph=True)
    g_vae = torch.autograd.grad(kl_term(vae, kl), (mu, logvar))
    for a, b in zip(g_fb, g_vae):
        assert torch.all(a[:, [1, 3]] == 0)
        torch.testing.assert_close(a[:, [0, 2]], b[:, [0, 2]])
    # the value: the clamped dimensions count λ each
    torch.testing.assert_close(kl_term(fb, kl), batch_mean[[0, 2]].sum() + 2 * lam)


def test_free_bits_groups_clamp_the_group_sum():
    fb = make(FreeBitsVAE, free_bits=1.0, group_size=2)
    kl = torch.tensor([[0.2, 0.3, 2.0, 1.0]])
    torch.testing.assert_close(kl_term(fb, kl), torch.tensor(1.0 + 3.0))


def test_free_bits_logs_the_true_kl_and_elbo():
    logged = {}
    fb = make(FreeBitsVAE, free_bits=100.0)  # every dimension far below λ
    fb.log = lambda name, value, **k: logged.__setitem__(
        name, float(value.detach() if hasattr(value, "detach") else value)
    )
    x = torch.bernoulli(torch.full((8, *SHAPE), 0.4))
    torch.manual_seed(1)
    loss = fb._step((x, None), "train")[0].loss
    assert logged["train/kl"] < 100.0
    assert logged["train/elbo"] == pytest.approx(-(logged["train/recon"] + logged["train/kl"]), rel=1e-5)
    assert float(loss) == pytest.approx(logged["train/recon"] + 4 * 100.0, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(cls=VAE, latent_dim=0),
        dict(cls=BetaVAE, beta=-1.0),
        dict(cls=FreeBitsVAE, free_bits=-0.1),
        dict(cls=FreeBitsVAE, group_size=3),
        dict(cls=BetaVAE, c_steps=0, c_max=5.0),
    ],
)
def test_bad_values_are_refused_with_the_name(kwargs):
    cls = kwargs.pop("cls")
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        torch.manual_seed(0)
        cls(encoder=MLPEncoder, decoder=MLPDecoder, image_shape=SHAPE, **{"latent_dim": 4, **kwargs})


def test_sample_and_reconstruct_shapes():
    model = make(VAE)
    assert model.sample(5).shape == (5, *SHAPE)
    x = torch.rand(3, *SHAPE)
    out = model.reconstruct(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_a_checkpoints_test_evaluates_the_kl_schedule_at_the_checkpoints_step(tmp_path):
    # Lightning restores global_step only for fit: vae test of a step-6 checkpoint used to give
    # the warm-up's step-0 weight (0) in test/loss and test/kl_weight
    import lightning as L

    from vae_lightning import LinearWarmup
    from vae_lightning.data import SpritesDataModule

    def trainer(**kw):
        return L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, **kw)

    def model():
        return VAE(MLPEncoder, MLPDecoder, latent_dim=3, image_shape=(1, 64, 64), kl_schedule=LinearWarmup(steps=10))

    data = SpritesDataModule(batch_size=16, num_images=96, val_size=32)
    fit = trainer(max_steps=6, limit_val_batches=0, enable_checkpointing=False, default_root_dir=tmp_path)
    fit.fit(model(), datamodule=data)
    fit.save_checkpoint(tmp_path / "step6.ckpt")
    ckpt = tmp_path / "step6.ckpt"
    (result,) = trainer(default_root_dir=tmp_path).test(model(), datamodule=data, ckpt_path=ckpt, weights_only=False)
    assert result["test/kl_weight"] == pytest.approx(0.6)
    assert result["test/loss"] == pytest.approx(result["test/recon"] + 0.6 * result["test/kl"], rel=1e-5)


BAD_ARGUMENTS = {
    "latent_dim": lambda: VAE(image_shape=(1, 28, 28), latent_dim=0),
    "lr_interval": lambda: VAE(image_shape=(1, 28, 28), lr_interval="weekly"),
    "beta": lambda: BetaVAE(image_shape=(1, 28, 28), beta=-1.0),
    "free_bits": lambda: FreeBitsVAE(image_shape=(1, 28, 28), free_bits=-1.0),
    "warmup": lambda: LinearWarmup(steps=0),
    "sigma": lambda: Gaussian(sigma=0.0),
    "conv_size": lambda: ConvEncoder((1, 20, 20), 4),
    "callback": lambda: NonFiniteGuard(max_skips=-1),
}


@pytest.mark.parametrize("name", BAD_ARGUMENTS)
def test_a_bad_constructor_argument_is_one_type_a_user_error_that_names_it(name):
    with pytest.raises(UserError) as err:
        BAD_ARGUMENTS[name]()
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)
