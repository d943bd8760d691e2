"""The speed work changes no results: metrics on the write cadence keep their keys and values,
the windowed sprites renderer draws the same pixels, sources move to a GPU only when asked,
and the compile and channels-last switches keep the model's outputs and checkpoint keys."""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger

from bench.micro import full_frame_render  # the renderer before the speed work: every formula on every pixel
from helpers import TinyData
from vae_lightning import VAE, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from vae_lightning.data import MNISTDataModule, SpritesDataModule
from vae_lightning.data.sprites import FACTOR_SIZES, render
from vae_lightning.errors import UserError

KEYS = {"train/loss", "train/recon", "train/kl", "train/elbo", "train/kl_weight"}


class Recorder(Logger):
    name, version = "recorder", 0

    def __init__(self):
        super().__init__()
        self.rows = []

    def log_metrics(self, metrics, step):
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


class Losses(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def train_tiny(tmp_path, every_step: bool):
    L.seed_everything(0)
    model = VAE(encoder=MLPEncoder, decoder=MLPDecoder, latent_dim=2, image_shape=(1, 8, 8))
    if every_step:  # the behaviour before: self.log on every training step
        model.log_now = lambda: True
    logger, losses = Recorder(), Losses()
    trainer = L.Trainer(
        max_steps=12,
        log_every_n_steps=5,
        logger=logger,
        callbacks=[losses],
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    calls = []
    log = model.log
    model.log = lambda name, *a, **k: (calls.append(name), log(name, *a, **k))
    trainer.fit(model, datamodule=TinyData(batch_size=8))
    rows = [(step, m) for step, m in logger.rows if KEYS & set(m)]
    return rows, losses.losses, calls, trainer


def test_train_metrics_are_written_on_the_cadence_with_the_same_keys_and_values(tmp_path):
    rows, losses, calls, trainer = train_tiny(tmp_path, every_step=False)
    before, _, calls_before, _ = train_tiny(tmp_path, every_step=True)
    assert [step for step, _ in rows] == [step for step, _ in before] == [4, 9]  # every 5th step
    for (step, metrics), (_, old) in zip(rows, before):
        assert set(metrics) == set(old) and KEYS <= set(metrics)
        assert metrics == pytest.approx(old, rel=1e-6)
        assert metrics["train/loss"] == pytest.approx(losses[step], rel=1e-6)  # that step's loss
        assert metrics["train/elbo"] == pytest.approx(-(metrics["train/recon"] + metrics["train/kl"]), rel=1e-5)
    assert len(calls) == 2 * len(KEYS) and len(calls_before) == 12 * len(KEYS)  # self.log only when written
    assert trainer.progress_bar_metrics["train/loss"] == pytest.approx(losses[9], rel=1e-6)


def test_windowed_render_draws_the_same_pixels_as_the_full_frame():
    # every shape, scale and orientation at the four extreme positions, plus random images
    grid = torch.cartesian_prod(
        *[torch.arange(n) for n in FACTOR_SIZES[:3]], torch.tensor([0, 31]), torch.tensor([0, 31])
    )
    g = torch.Generator().manual_seed(0)
    rand = torch.stack([torch.randint(0, n, (2000,), generator=g) for n in FACTOR_SIZES], 1)
    factors = torch.cat([grid, rand])
    assert torch.equal(render(factors), full_frame_render(factors))


def fake_trainer(device: str):
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), global_rank=0, world_size=1)


@pytest.mark.parametrize(
    "on_device, device, expected",
    [
        (None, "cuda:0", "cuda:0"),
        (None, "cpu", None),
        (None, "mps", None),
        (False, "cuda:0", None),
        (True, "cpu", None),
        (True, "mps", "mps"),
    ],
)
def test_sources_go_to_the_training_device_when_it_is_a_gpu_or_when_asked(on_device, device, expected):
    dm = SpritesDataModule(on_device=on_device)
    dm.trainer = fake_trainer(device)
    assert dm.source_device() == (None if expected is None else torch.device(expected))


def test_placed_sources_are_moved_once_and_splits_keep_sharing_them(mnist_dir):
    dm = MNISTDataModule(data_dir=str(mnist_dir), binarize="fixed", val_size=1000, on_device=True)
    dm.setup("fit")
    dm.trainer = fake_trainer("meta")  # a device that is not the CPU, without needing a GPU
    dm.train_dataloader()
    assert dm.train_source.images.device.type == "meta"
    assert dm.val_source is dm.train_source  # one copy for the splits that share the fixed draw
    sprites = SpritesDataModule(num_images=100, val_size=10, on_device=True)
    sprites.setup("fit")
    sprites.trainer = fake_trainer("meta")
    sprites.val_dataloader()
    assert sprites.train_source.device.type == "meta" and sprites.test_source is sprites.train_source


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sprites_batches_are_rendered_on_the_gpu(tmp_path):
    dm = SpritesDataModule(num_images=1000, val_size=100, batch_size=16)
    model = VAE(encoder=MLPEncoder, decoder=MLPDecoder, latent_dim=2, image_shape=dm.image_shape)
    seen = []
    model.on_train_batch_start = lambda batch, i: seen.append(batch[0].device.type)
    L.Trainer(
        accelerator="gpu",
        devices=1,
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    ).fit(model, datamodule=dm)
    assert seen == ["cuda"] * 3 and dm.train_source.device.type == "cuda"


def conv_pair(**kw):
    torch.manual_seed(0)
    args = dict(encoder=ConvEncoder, decoder=ConvDecoder, latent_dim=3, image_shape=(1, 28, 28))
    plain = VAE(**args)
    other = VAE(**args, **kw)
    other.load_state_dict(plain.state_dict())
    return plain, other


def test_channels_last_keeps_the_outputs_and_the_checkpoint_keys():
    plain, cl = conv_pair(channels_last=True)
    assert list(cl.state_dict()) == list(plain.state_dict())
    assert cl.encoder.conv[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.3))
    torch.manual_seed(1)
    expected = plain(x)
    torch.manual_seed(1)
    for a, b in zip(expected, cl(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_compile_keeps_the_outputs_gradients_and_checkpoint_keys(monkeypatch):
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)  # the same draws as eager
    torch.manual_seed(0)
    args = dict(encoder=MLPEncoder, decoder=MLPDecoder, latent_dim=2, image_shape=(1, 4, 4))
    eager = VAE(**args)
    compiled = VAE(**args, compile=True)
    compiled.load_state_dict(eager.state_dict())
    assert list(compiled.state_dict()) == list(eager.state_dict())
    x = torch.bernoulli(torch.full((8, 1, 4, 4), 0.3))
    outputs = []
    for model in (eager, compiled):
        torch.manual_seed(1)
        f = model(x)
        (f.recon.mean() + f.kl.mean()).backward()
        outputs.append((f.recon, f.kl_dims, f.z, model.encoder.net[0].weight.grad))
    for a, b in zip(*outputs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not math.isnan(outputs[1][0].sum().item())


def test_a_compile_mode_reaches_torch_compile_and_a_bad_one_is_refused(monkeypatch):
    import vae_lightning.models as models

    calls, compiling = [], [False]

    def fake_compile(fn, mode):  # records the mode; runs fn eagerly, as if inside the compiled graph
        def run(*args):
            compiling[0] = True
            try:
                return fn(*args)
            finally:
                compiling[0] = False

        calls.append(mode)
        return run

    monkeypatch.setattr(models, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling[0])
    args = dict(encoder=MLPEncoder, decoder=MLPDecoder, latent_dim=2, image_shape=(1, 4, 4))
    x = torch.rand(3, 1, 4, 4)
    for value, mode in ((True, "default"), ("reduce-overhead", "reduce-overhead"), ("max-autotune", "max-autotune")):
        VAE(**args, compile=value)(x)
        assert calls[-1] == mode
    with pytest.raises(UserError, match="model.init_args.compile must be true, false or one of default"):
        VAE(**args, compile="fastest")
