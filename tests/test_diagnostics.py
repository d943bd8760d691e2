"""Posterior-collapse monitor, FID with an offline feature extractor, picture grids."""

import warnings
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn

from vae_lightning import VAE, MLPDecoder, MLPEncoder
from vae_lightning.callbacks import FID
from vae_lightning.callbacks.collapse import CollapseMonitor, kl_bar_chart
from vae_lightning.data.sprites import SpritesDataModule
from vae_lightning.errors import UserError
from vae_lightning.evaluation import pictures
from vae_lightning.evaluation.fid import make_fid


def fake_run(tmp_path, kl_per_dim, active):
    trainer = SimpleNamespace(sanity_checking=False, global_step=7, default_root_dir=str(tmp_path), loggers=[])
    stats = {
        "kl_per_dim": torch.tensor(kl_per_dim),
        "mu_var": torch.tensor([0.5 if a else 0.0 for a in active]),
        "active_units": torch.tensor(sum(active)),
    }
    return trainer, SimpleNamespace(latent_stats={"val": stats})


def test_collapse_monitor_warns_once_when_no_unit_is_active_and_draws_the_kl(tmp_path):
    monitor = CollapseMonitor()
    trainer, module = fake_run(tmp_path, [0.001, 0.002, 0.0], [False, False, False])
    with pytest.warns(UserWarning, match="Posterior collapse: none of the 3 latent dimensions is active.*free bits"):
        monitor.on_validation_end(trainer, module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second collapse says nothing more
        monitor.on_validation_end(trainer, module)
    assert (tmp_path / "images" / "kl_per_dim_step0000007.png").exists()


def test_collapse_monitor_waits_for_patience_validations_of_low_kl():
    monitor = CollapseMonitor(kl_threshold=0.5, patience=3)
    assert monitor.message(0.2, active=2, dims=4) is None
    assert monitor.message(0.9, active=2, dims=4) is None  # a good validation resets the count
    assert monitor.message(0.2, active=2, dims=4) is None
    assert monitor.message(0.3, active=2, dims=4) is None
    text = monitor.message(0.1, active=2, dims=4)
    assert "stayed under 0.5 nats for 3 validations" in text and "KL warm-up" in text and "weaker decoder" in text
    assert all(
        r in text for r in ("FreeBitsVAE", "LinearWarmup", "BetaVAE", "beta below 1", "fewer layers", "docs/zoo.md")
    )


def test_collapse_monitor_warns_when_the_kl_rises_without_information(tmp_path):
    """The capacity form's failure (issue 27): the KL follows C up while no unit is active and MI is 0.
    The "none active" warning comes first; the rise gets its own warning, once, naming the remedies."""
    monitor = CollapseMonitor(every_n_val=0)
    trainer, module = fake_run(tmp_path, [0.1] * 10, [False] * 10)
    stats = module.latent_stats["val"]
    stats["mi"] = torch.tensor(4e-5)
    seen = []
    for kl in (0.87, 1.61, 2.39, 3.41, 4.55):  # val/kl of configs/sprites/beta_vae_capacity.yaml, steps 100-500
        stats["kl"] = torch.tensor(kl)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            monitor.on_validation_end(trainer, module)
        seen.append([str(w.message) for w in caught])
    assert "none of the 10 latent dimensions is active" in seen[0][0] and len(seen[0]) == 1
    assert len(seen[1]) == 1 and seen[2:] == [[], [], []]  # once
    text = seen[1][0]
    assert text.startswith("KL without information: the KL rose from 0.87 to 1.61 nats")
    assert "mutual information I(x; z) is 0.000 nats" in text
    assert all(r in text for r in ("LinearWarmup", "model.init_args.c_steps", "model.init_args.gamma"))


def test_collapse_monitor_says_nothing_of_a_kl_that_is_flat_or_carries_information():
    monitor = CollapseMonitor()
    for kl in (0.30, 0.05, 0.40, 0.10):  # a collapsed VAE: KL near 0 and noisy, no rise of 0.5 nats
        assert monitor.no_info_message(kl, mi=1e-5, active=0) is None
    monitor = CollapseMonitor()
    for kl, mi, active in ((1.0, 0.0, 0), (3.0, 1.5, 2), (6.0, 2.5, 4), (9.0, 3.0, 5)):  # information arrives
        assert monitor.no_info_message(kl, mi=mi, active=active) is None
    assert monitor.no_info_kl is None
    state = CollapseMonitor()
    state.no_info_message(1.0, 0.0, 0)
    restored = CollapseMonitor()
    restored.load_state_dict(state.state_dict())  # a resumed run keeps the lowest KL seen
    assert restored.no_info_message(2.0, 0.0, 0) is not None


def test_kl_bar_chart_is_an_rgb_image():
    image = kl_bar_chart(torch.tensor([1.0, 0.0, 2.5]), torch.tensor([1.0, 0.0, 1.0]))
    assert image.shape[0] == 3 and image.min() >= 0 and image.max() <= 1 and image.std() > 0


class TinyFeatures(nn.Module):
    """A fixed random conv feature extractor: images (N, 3, H, W) in [0, 1] -> (N, 16)."""

    num_features = 16

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 16, 5, 2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x)


def test_fid_is_near_zero_for_one_distribution_and_larger_for_another():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(256, 3, 32, 32, generator=g), torch.rand(256, 3, 32, 32, generator=g)
    fid = make_fid(TinyFeatures())
    fid.update(a, real=True)
    fid.update(b, real=False)
    same = fid.compute().item()
    fid.reset()
    fid.update(a, real=True)
    fid.update(b.square(), real=False)  # darker images
    assert fid.compute().item() > 10 * same


def test_fid_callback_logs_test_fid_in_vae_test(tmp_path):
    model = VAE(encoder=MLPEncoder, decoder=MLPDecoder, latent_dim=4, image_shape=(1, 64, 64), iw_samples=2)
    dm = SpritesDataModule(batch_size=32, num_images=200, val_size=64)
    trainer = L.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        callbacks=[FID(feature=TinyFeatures(), max_images=48)],
    )
    trainer.test(model, datamodule=dm, verbose=False)
    assert trainer.callback_metrics["test/fid"].item() > 0


@pytest.mark.parametrize("error", [ModuleNotFoundError("no torch_fidelity"), OSError("<urlopen error>")])
def test_fid_without_inception_weights_is_one_sentence(monkeypatch, error):
    import torchmetrics.image.fid as tm_fid

    def unavailable(*args, **kwargs):
        raise error

    monkeypatch.setattr(tm_fid, "FrechetInceptionDistance", unavailable)
    with pytest.raises(UserError, match="needs the torch-fidelity package and its weights"):
        make_fid(2048)


def test_traversal_and_interpolation_grids_have_one_row_per_dimension_or_pair():
    torch.manual_seed(0)
    model = VAE(encoder=MLPEncoder, decoder=MLPDecoder, latent_dim=5, image_shape=(1, 8, 8)).eval()
    grid = pictures.traversal_grid(model, torch.zeros(5), [4, 0, 2], steps=7)
    assert grid.shape == (3, 2 + 3 * 10, 2 + 7 * 10)
    x = torch.rand(4, 1, 8, 8)
    mu = pictures.encode_mean(model, x)
    grid = pictures.interpolation_grid(model, mu[:2], mu[2:], steps=6, x_a=x[:2], x_b=x[2:])
    assert grid.shape == (3, 2 + 2 * 10, 2 + 8 * 10)  # each row framed by its two inputs
    # the first and last decoded images of a row are the reconstructions of the two inputs
    torch.testing.assert_close(grid[0, 2:10, 12:20], model.reconstruct(x[:1])[0, 0])
    order = pictures.activity_order(torch.randn(100, 3) * torch.tensor([0.1, 3.0, 1.0]))
    assert order.tolist() == [1, 2, 0]
