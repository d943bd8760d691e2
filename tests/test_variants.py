"""The variant contract: every VAE class fits, validates, tests, predicts, samples and round-trips
through a checkpoint; checkpoints written before the forward record existed still load; and the
β-TCVAE objective against the closed form of a Gaussian's total correlation."""

from __future__ import annotations

import functools
import inspect
import math
from pathlib import Path

import lightning as L
import pytest
import torch

import vae_lightning.hierarchical as hierarchical
import vae_lightning.nets as nets
import vae_lightning.variants as variants
from vae_lightning import VAE, MLPDecoder, MLPEncoder
from vae_lightning.data import SpritesDataModule
from vae_lightning.data.base import images
from vae_lightning.errors import UserError
from vae_lightning.models import ForwardRecord
from vae_lightning.priors import MixtureOfGaussians, VampPrior
from vae_lightning.runtime.checkpoint import load_model

FIXTURES = Path(__file__).parent / "fixtures" / "main-2f68d99"
# every VAE class of the package (the variants, and the models of another structure): a new one is
# tested without being listed here
VARIANTS = [VAE] + sorted(
    {
        c
        for module in (variants, hierarchical)
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, VAE) and c is not VAE
    },
    key=lambda c: c.__name__,
)
# models that build their own nets: their tiny version
OWN_NETS = {
    hierarchical.HierarchicalVAE: {"groups": [1, 1], "stem": 3, "channels": 8, "bottleneck": 4, "z_channels": 1}
}
# every decoder of the package, each with small sizes (a new decoder fails the check below until it has them)
DECODERS = sorted(
    (
        c
        for c in vars(nets).values()
        if isinstance(c, type) and issubclass(c, nets.Decoder) and not inspect.isabstract(c)
    ),
    key=lambda c: c.__name__,
)
TINY_DECODERS = {
    MLPDecoder: functools.partial(MLPDecoder, hidden=[16]),
    nets.ConvDecoder: functools.partial(nets.ConvDecoder, channels=[4, 4], hidden=16),
    nets.PixelCNNDecoder: functools.partial(
        nets.PixelCNNDecoder,
        layers=2,
        channels=4,
        kernel=3,
        first_kernel=3,
        cond_channels=4,
        cond_net=[4],
        cond_hidden=8,
    ),
}
# (class, prior factory, decoder): every variant with the default prior and the MLP decoder, learned
# priors on two of them, every other decoder under the VAE, and the autoregressive one under the IWAE
# (whose training loss decodes k draws of z per image)
CASES = (
    [(c, None, MLPDecoder) for c in VARIANTS]
    + [
        (VAE, functools.partial(VampPrior, num_components=5), MLPDecoder),
        (variants.BetaVAE, functools.partial(MixtureOfGaussians, num_components=4), MLPDecoder),
    ]
    + [(VAE, None, d) for d in DECODERS if d is not MLPDecoder]
    + [(variants.IWAE, None, nets.PixelCNNDecoder)]
)


def tiny(cls, prior=None, decoder=MLPDecoder):
    if getattr(cls, "func", cls) in OWN_NETS:
        return cls(**OWN_NETS[cls], image_shape=(1, 64, 64), iw_samples=3)
    return cls(
        encoder=functools.partial(MLPEncoder, hidden=[16]),
        decoder=TINY_DECODERS[decoder],
        latent_dim=3,
        image_shape=(1, 64, 64),
        iw_samples=3,
        prior=prior,
    )


def test_every_decoder_is_in_the_contract_test():
    assert set(DECODERS) == set(TINY_DECODERS), "give a new decoder small sizes in TINY_DECODERS"
    assert nets.PixelCNNDecoder in DECODERS


def _case_id(value) -> str:
    if value is None:
        return "default-prior"
    return getattr(value, "__name__", None) or value.func.__name__


@pytest.mark.parametrize(("cls", "prior", "decoder"), CASES, ids=_case_id)
def test_every_variant_fits_evaluates_predicts_samples_and_round_trips(cls, prior, decoder, tmp_path):
    L.seed_everything(0)
    dm = SpritesDataModule(batch_size=16, val_size=32, num_images=256)
    trainer = L.Trainer(
        max_steps=4,
        val_check_interval=2,
        limit_val_batches=1,
        limit_test_batches=1,
        limit_predict_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    model = tiny(cls, prior and prior(), decoder)
    trainer.fit(model, datamodule=dm)
    ckpt = Path(trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path)
    names = {"loss", "recon", "kl", "elbo", "active_units", "mi"}
    val = trainer.validate(model, datamodule=dm, verbose=False)[0]
    assert names <= {k.removeprefix("val/") for k in val} and all(math.isfinite(v) for v in val.values())
    test = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert {"test/nll_iw", "test/bpd", "test/elbo"} <= set(test)
    assert test["test/nll_iw"] <= -test["test/elbo"] + 50  # a k = 3 bound near −ELBO, not garbage
    scores = trainer.predict(model, datamodule=dm)[0]
    assert {"neg_elbo", "nll_iw", "sq_error", "log_pz"} <= set(scores)
    assert all(v.shape == (16,) and v.isfinite().all() for v in scores.values())
    assert model.sample(5).shape == (5, 1, 64, 64)

    loaded = cls.load_from_checkpoint(ckpt, weights_only=False)  # hparams hold the nets' partials
    assert type(loaded) is cls and type(loaded.prior) is type(model.prior)
    x = next(iter(dm.val_dataloader()))[0]
    model.eval()
    for m in (model, loaded):
        m.load_state_dict(torch.load(ckpt, weights_only=False)["state_dict"])
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(1)
    b = loaded(x)
    torch.testing.assert_close(a.recon, b.recon, rtol=0, atol=0)
    assert loaded.dataset_size == model.dataset_size == dm.num_train


@pytest.mark.parametrize("name", ["vae", "beta_vae_capacity", "free_bits"])
def test_checkpoints_of_the_release_before_the_forward_record_still_load(name):
    """Written by `vae fit` on main at 2f68d99 (tiny MLP nets, 6 steps), before this layout."""
    path = FIXTURES / name / "last.ckpt"
    raw = torch.load(path, map_location="cpu", weights_only=False)
    model = load_model(path)
    assert type(model).__name__ == raw["hyper_parameters"]["_class_path"].rsplit(".", 1)[1]
    for key, value in raw["state_dict"].items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    x = torch.bernoulli(torch.full((4, 1, 64, 64), 0.1))
    f = model(x)
    assert f.recon.shape == (4,) and f.kl_dims.shape == (4, 3) and f.recon.isfinite().all()


def gaussian_record(mu, sigma):
    z = mu + sigma * torch.randn_like(mu)
    logvar = torch.full_like(mu, 2 * math.log(sigma))
    return ForwardRecord(None, mu, logvar, z, None, torch.zeros(len(mu)), torch.zeros_like(mu))


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_beta_tcvae_terms_sum_to_the_one_sample_kl(estimator):
    """mi + tc + dim_kl = E[log q(z|x) − log p(z)] for every batch (the decomposition is exact)."""
    torch.manual_seed(0)
    model = tiny(functools.partial(variants.BetaTCVAE, estimator=estimator))
    mu = torch.randn(64, 3)
    f = gaussian_record(mu, 0.3)
    terms = model.objective(f, 0, 10_000).terms
    q = torch.distributions.Normal(mu, 0.3)
    one_sample_kl = (q.log_prob(f.z) - torch.distributions.Normal(0.0, 1.0).log_prob(f.z)).sum(1).mean()
    torch.testing.assert_close(terms["index_mi"] + terms["tc"] + terms["dim_kl"], one_sample_kl)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_beta_tcvae_total_correlation_converges_to_the_closed_form(estimator):
    """Posteriors N(μ_j, σ²I) with μ_j ~ N(0, A): the aggregate q(z) is N(0, A + σ²I), whose total
    correlation is ½(Σ_u log C_uu − log det C). MWS: the batch is the whole data set (N = M);
    MSS: a batch of M = 3,000 from a data set of N = 10⁶ (the μ_j are independent draws)."""
    torch.manual_seed(0)
    cov_mu = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    sigma, m = 0.5, 3000
    n = m if estimator == "mws" else 10**6
    mu = torch.distributions.MultivariateNormal(torch.zeros(2), cov_mu).sample((m,))
    c = cov_mu + sigma**2 * torch.eye(2)
    closed_form = 0.5 * (c.diagonal().log().sum() - torch.logdet(c))
    model = tiny(functools.partial(variants.BetaTCVAE, estimator=estimator))
    estimates = [model.objective(gaussian_record(mu, sigma), 0, n).terms["tc"] for _ in range(3)]
    assert float(closed_form) == pytest.approx(0.2635, abs=1e-3)
    assert float(torch.stack(estimates).mean()) == pytest.approx(float(closed_form), abs=0.04)


def test_beta_tcvae_mss_weights_are_chen_et_al_s():
    """Appendix C.2 of Chen et al. 2018, written out for M = 4, N = 10: own 1/N, one other
    (N − M + 1)/(N(M − 1)), the rest 1/(M − 1); every row sums to 1."""
    w = tiny(functools.partial(variants.BetaTCVAE, estimator="mss")).log_weights(4, 10).double().exp()
    a, b, c = 1 / 10, 7 / 30, 1 / 3
    expected = torch.tensor([[a, b, c, c], [c, a, b, c], [c, c, a, b], [b, c, c, a]], dtype=torch.float64)
    torch.testing.assert_close(w, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(w.sum(1), torch.ones(4, dtype=torch.float64), rtol=1e-6, atol=0)


def test_beta_tcvae_mss_on_a_batch_of_one_uses_the_posterior_itself():
    """M = 1: W = 1 for both estimators, so index_mi = tc = 0 and dim_kl is the one-sample KL."""
    torch.manual_seed(0)
    model = tiny(functools.partial(variants.BetaTCVAE, estimator="mss"))
    assert model.log_weights(1, 10_000).tolist() == [[0.0]]
    f = gaussian_record(torch.randn(1, 3), 0.3)
    terms = model.objective(f, 0, 10_000).terms
    q, p = torch.distributions.Normal(f.mu, 0.3), torch.distributions.Normal(0.0, 1.0)
    assert float(terms["index_mi"]) == 0.0 and float(terms["tc"]) == 0.0
    torch.testing.assert_close(terms["dim_kl"], (q.log_prob(f.z) - p.log_prob(f.z)).sum())


class BatchSizes(L.Callback):
    """Records the size of every validation batch."""

    def __init__(self):
        self.sizes = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.sizes.append(len(images(batch)))


def test_beta_tcvae_mss_evaluates_a_split_that_ends_in_a_batch_of_one(tmp_path):
    """A validation split of 17 in batches of 16 ends with a batch of one (evaluation loaders keep
    their last partial batch): the stratified estimator must not abort the evaluation."""
    L.seed_everything(0)
    dm = SpritesDataModule(batch_size=16, val_size=17, num_images=256)
    model = tiny(functools.partial(variants.BetaTCVAE, estimator="mss"))
    sizes = BatchSizes()
    trainer = L.Trainer(
        max_steps=2,
        val_check_interval=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
        callbacks=[sizes],
    )
    trainer.fit(model, datamodule=dm)
    assert sizes.sizes == [16, 1]
    terms = [float(trainer.callback_metrics[f"val/{name}"]) for name in ("index_mi", "tc", "dim_kl", "loss")]
    assert all(math.isfinite(t) for t in terms)


class NoSizeData(L.LightningDataModule):
    """Sprites without ``num_train``: a data module that does not know its size."""

    image_shape, binary = (1, 64, 64), True

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.bernoulli(torch.full((32, 1, 64, 64), 0.1)), batch_size=16)


def test_beta_tcvae_mss_refuses_data_without_a_known_size(tmp_path):
    model = tiny(functools.partial(variants.BetaTCVAE, estimator="mss"))
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    with pytest.raises(UserError, match="BetaTCVAE needs the training-set size.*num_train"):
        trainer.fit(model, datamodule=NoSizeData())
    with pytest.raises(UserError, match="model.init_args.estimator must be 'mws' or 'mss', got 'msw'"):
        tiny(functools.partial(variants.BetaTCVAE, estimator="msw"))


def _failing_load(error: Exception):
    def load(cls, *args, **kwargs):
        raise error

    return classmethod(load)


@pytest.mark.parametrize(
    "error, words",
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), ["out of memory", "--device cpu"]),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 GB"), ["out of memory"]),
        (RuntimeError("Error(s) in loading state_dict for VAE: size mismatch"), ["does not fit VAE", "size mismatch"]),
    ],
    ids=["cuda-oom", "cpu-oom", "other-weights"],
)
def test_load_model_tells_out_of_memory_from_weights_that_do_not_fit(error, words, monkeypatch):
    monkeypatch.setattr(VAE, "load_from_checkpoint", _failing_load(error))
    with pytest.raises(UserError) as err:
        load_model(FIXTURES / "vae" / "last.ckpt")
    assert all(w in str(err.value) for w in words), str(err.value)
    assert ("does not fit" in str(err.value)) == (words[0] == "does not fit VAE")


def test_load_model_onto_cuda_without_a_gpu_says_cuda_is_missing():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(UserError, match="CUDA is missing"):
        load_model(FIXTURES / "vae" / "last.ckpt", map_location="cuda")
