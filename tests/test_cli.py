"""The `vae` command: shipped configs parse, every sprites variant trains end to end through the
real entry point with W&B offline, checkpoints load and resume, bad values get one sentence."""

import csv
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_vae
from vae_lightning import DIPVAE, IWAE, BetaTCVAE, BetaVAE, FactorVAE, FreeBitsVAE, VAE
from vae_lightning.cli import main
from vae_lightning.lightning_cli import VAECLI

EXPERIMENTS = sorted(str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").glob("*/*.yaml") if p.parent.name in
                     ("sprites", "mnist", "cifar10", "celeba"))
SPRITES = {"sprites/vae.yaml": VAE, "sprites/beta_vae.yaml": BetaVAE,
           "sprites/beta_vae_capacity.yaml": BetaVAE, "sprites/free_bits.yaml": FreeBitsVAE,
           "sprites/beta_tcvae.yaml": BetaTCVAE, "sprites/factor_vae.yaml": FactorVAE, "sprites/dip_vae_i.yaml": DIPVAE,
           "sprites/dip_vae_ii.yaml": DIPVAE, "sprites/iwae.yaml": IWAE, "sprites/annealed_vae.yaml": BetaVAE}
# small and quick: a few thousand sprites, short validation, batch 16
QUICK = ["--data.init_args.num_images", "3000", "--data.init_args.val_size", "200", "--data.init_args.batch_size", "16",
         "--trainer.val_check_interval", "10", "--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "5",
         "--trainer.enable_progress_bar", "false"]


def layers(experiment: str, root: Path = Path("configs")) -> list[str]:
    """``--config`` flags for an experiment: base.yaml, its data set's vae.yaml (the shared model
    block; experiment files say only what differs from it) and the experiment file."""
    shared = f"{Path(experiment).parent}/vae.yaml"
    files = ["base.yaml", *([shared] if shared != experiment else []), experiment]
    return [a for f in files for a in ("--config", str(root / f))]


def test_help_is_instant_and_lists_the_subcommands(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("fit", "validate", "test", "predict"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_config_builds_its_classes(experiment, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing is written into the repository
    cli = VAECLI(args=layers(experiment, REPO / "configs"), run=False)
    assert isinstance(cli.model, VAE) and cli.model.image_shape == tuple(cli.datamodule.image_shape)


@pytest.mark.parametrize("extra", ["logger/csv.yaml", "logger/tensorboard.yaml", "trainer/bf16.yaml", "demo.yaml"])
def test_stackable_configs_compose(extra, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cli = VAECLI(args=["--config", str(REPO / "configs/base.yaml"), "--config", str(REPO / "configs/sprites/vae.yaml"),
                       "--config", str(REPO / "configs" / extra)], run=False)
    assert cli.trainer is not None


def test_print_config_shows_the_whole_run(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(REPO / "configs/base.yaml"), "--config", str(REPO / "configs/sprites/free_bits.yaml"),
              "--print_config"])
    assert exit_.value.code in (0, None)
    out = capsys.readouterr().out
    for needle in ("class_path: vae_lightning.FreeBitsVAE", "free_bits: 0.25", "WandbLogger",
                   "class_path: vae_lightning.data.SpritesDataModule", "monitor: val/loss"):
        assert needle in out


def _last_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(SPRITES))
def test_sprites_variant_trains_logs_to_wandb_offline_and_resumes(experiment, tmp_path):
    root = tmp_path / "run"
    common = [*layers(experiment), *QUICK,
              "--trainer.default_root_dir", str(root)]
    first = run_vae("fit", *common, "--trainer.max_steps", "20")
    assert first.returncode == 0, first.stderr[-3000:]

    # W&B offline: the run folder exists, holds the metric keys and the plain config
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    record = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in (b"train/loss", b"train/recon", b"train/kl", b"train/elbo", b"train/kl_weight", b"val/loss", b"val/elbo"):
        assert key in record
    assert b'"class_path":"vae_lightning.data.SpritesDataModule"' in record and b"_instantiator" not in record
    assert (runs[0] / "files" / "vae_config.yaml").exists()

    # the checkpoint loads into the right class, with its hyper-parameters
    last = root / "checkpoints" / "version_0" / "last.ckpt"  # one folder per run; a resumed fit keeps it
    assert _last_step(last) == 20
    cls = SPRITES[experiment]
    hparams = torch.load(last, map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hparams["_class_path"] == f"vae_lightning.{cls.__name__}"
    model = cls.load_from_checkpoint(last, map_location="cpu")
    assert type(model) is cls and model.image_shape == (1, 64, 64)
    assert model.sample(2).shape == (2, 1, 64, 64)

    # resume: the global step continues from 20 (the CSV logger shows the steps of the second run)
    second = run_vae("fit", *common, "--config", "configs/logger/csv.yaml", "--trainer.max_steps", "35",
                     "--ckpt_path", "last")
    assert second.returncode == 0, second.stderr[-3000:]
    assert _last_step(last) == 35
    rows = list(csv.DictReader(open(next((root / "csv").glob("version_*/metrics.csv")))))
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps and min(steps) >= 20 and max(steps) >= 30


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "configs/sprites/beta_vae.yaml", "--model.init_args.beta", "-1"], "beta must be >= 0, got -1.0."),
        (["--config", "configs/sprites/vae.yaml", "--model.init_args.latent_dims", "3"], "latent_dims"),
        (["--config", "configs/mnist/vae.yaml", "--data.init_args.data_dir", "/no/such/dir"],
         "data_dir '/no/such/dir' does not exist"),
        (["--config", "configs/sprites/vae.yaml", "--model.init_args.image_shape", "[1,28,28]"],
         "image_shape is (1, 28, 28) but SpritesDataModule yields (1, 64, 64)"),
    ],
    ids=["negative-beta", "unknown-key", "missing-data-dir", "28px-net-on-64px-data"],
)
def test_wrong_values_get_one_sentence_and_a_nonzero_exit(args, message, tmp_path):
    result = run_vae("fit", *args, "--trainer.default_root_dir", str(tmp_path / "run"))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("vae: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "run").rglob("*.ckpt")) and not list((tmp_path / "run").glob("checkpoints/version_*"))


@pytest.mark.slow
def test_mnist_vae_trains_from_local_files(mnist_dir, tmp_path):
    root = tmp_path / "run"
    result = run_vae("fit", "--config", "configs/base.yaml", "--config", "configs/mnist/vae.yaml",
                     "--config", "configs/logger/csv.yaml", "--data.init_args.data_dir", str(mnist_dir),
                     "--data.init_args.val_size", "500", "--trainer.max_steps", "30", "--trainer.val_check_interval", "15",
                     "--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "5",
                     "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(next((root / "csv").glob("version_*/metrics.csv")))))
    elbos = [float(r["val/elbo"]) for r in rows if r.get("val/elbo")]
    # nats per 784 binary pixels: starts near -784·ln 2 = -543 and improves within 30 steps
    assert len(elbos) == 2 and -600 < elbos[0] < elbos[1] < 0
    config = (next((root / "csv").glob("version_*")) / "vae_config.yaml").read_text()
    assert "binarize: dynamic" in config  # the binarization is part of the logged config
