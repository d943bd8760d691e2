"""Bad input is refused before training with one sentence, a non-zero exit and no traceback, and
leaves every file of an earlier run as it was. Runs in-process through `vae_lightning.cli.main`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers import snapshot, vae


def _files(base: Path) -> dict[str, Path]:
    """Broken and odd inputs, made once per test."""
    (base / "syntax.yaml").write_text("model:\n  init_args: {latent_dim: 4\n")
    (base / "list.yaml").write_text("- trainer\n- model\n")
    (base / "unknown.yaml").write_text("trainer:\n  max_stepz: 3\n")
    (base / "wrongtype.yaml").write_text("model:\n  init_args:\n    latent_dim: ten\n")
    (base / "a_file").write_text("not a folder")
    images = base / "images"
    images.mkdir()
    from PIL import Image

    for i in range(4):
        Image.new("L", (48, 48), color=i * 60).save(images / f"{i}.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    gray = base / "gray"
    gray.mkdir()
    for i in range(4):
        Image.new("L", (28, 28), color=i * 60).save(gray / f"{i}.png")
    return {"base": base, "images": images, "gray": gray}


def _checkpoints(base: Path, root: Path) -> None:
    good = root / "checkpoints" / "version_0" / "last.ckpt"
    data = good.read_bytes()
    (base / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    ckpt = torch.load(good, weights_only=False)
    ckpt["hyper_parameters"]["_class_path"] = "vae_lightning.BetaVAE"
    torch.save(ckpt, base / "beta.ckpt")
    ckpt = torch.load(good, weights_only=False)
    ckpt["hyper_parameters"]["latent_dim"] = 6
    ckpt["state_dict"]["encoder.net.2.weight"] = torch.zeros(12, 16)
    torch.save(ckpt, base / "latent6.ckpt")


CORES = len(os.sched_getaffinity(0))

# (id, extra args ({b}: a folder of bad files), words the one-line message must contain)
CASES = [
    ("yaml-syntax", ["--config", "{b}/syntax.yaml"], ["syntax.yaml", "not valid YAML", "line"]),
    ("yaml-not-mapping", ["--config", "{b}/list.yaml"], ["list.yaml", "mapping"]),
    ("unknown-key-yaml", ["--config", "{b}/unknown.yaml"], ["trainer.max_stepz", "did you mean trainer.max_steps"]),
    ("unknown-key-flag", ["--model.init_args.latnet_dim", "3"], ["latnet_dim", "did you mean latent_dim"]),
    ("unknown-option", ["--foo", "3"], ["--foo"]),
    ("wrong-type-yaml", ["--config", "{b}/wrongtype.yaml"], ["model.init_args.latent_dim", "integer", "ten"]),
    ("wrong-type-flag", ["--trainer.max_steps", "abc"], ["trainer.max_steps", "integer", "abc"]),
    ("wrong-type-nested", ["--model.init_args.encoder.init_args.hidden", "abc"], ["hidden", "list", "abc"]),
    ("unknown-class", ["--model", "vae_lightning.Nope"], ["vae_lightning.Nope"]),
    ("bad-choice", ["--trainer.precision", "64-foo"], ["trainer.precision", "bf16-mixed", "64-foo"]),
    ("latent-0", ["--model.init_args.latent_dim", "0"], ["latent_dim", ">= 1", "0"]),
    ("beta-negative", ["--model", "vae_lightning.BetaVAE", "--model.init_args.beta", "-1"], ["beta", ">= 0", "-1"]),
    (
        "gamma-negative",
        ["--model", "vae_lightning.BetaVAE", "--model.init_args.c_max", "5", "--model.init_args.gamma", "-2"],
        ["gamma", ">= 0"],
    ),
    (
        "free-bits-negative",
        ["--model", "vae_lightning.FreeBitsVAE", "--model.init_args.free_bits", "-0.5"],
        ["free_bits", ">= 0"],
    ),
    ("group-size", ["--model", "vae_lightning.FreeBitsVAE", "--model.init_args.group_size", "3"], ["group_size", "3"]),
    ("iwae-k-0", ["--model", "vae_lightning.IWAE", "--model.init_args.k", "0"], ["model.init_args.k", ">= 1", "got 0"]),
    (
        "tcvae-estimator",
        ["--model", "vae_lightning.BetaTCVAE", "--model.init_args.estimator", "msw"],
        ["model.init_args.estimator", "'mss'", "'msw'"],
    ),
    ("dip-kind", ["--model", "vae_lightning.DIPVAE", "--model.init_args.kind", "3"], ["model.init_args.kind", "'ii'"]),
    (
        "factor-vae-scheduler",
        ["--model", "vae_lightning.FactorVAE", "--model.init_args.lr_scheduler", "torch.optim.lr_scheduler.ConstantLR"],
        ["FactorVAE", "model.init_args.lr_scheduler"],
    ),
    (
        "factor-vae-clipping",
        ["--model", "vae_lightning.FactorVAE", "--trainer.gradient_clip_val", "1.0"],
        ["FactorVAE", "trainer.gradient_clip_val=1.0"],
    ),
    ("lr-negative", ["--model.init_args.optimizer.init_args.lr", "-1"], ["lr", "> 0", "-1"]),
    ("lr-zero", ["--model.init_args.optimizer.init_args.lr", "0"], ["lr", "> 0"]),
    (  # was "cannot import the class 'nan. Got value: Namespace(...)'"
        "lr-nan",
        ["--model.init_args.optimizer.init_args.lr", "nan"],
        ["model.init_args.optimizer.init_args.lr must be a number", "'nan'"],
    ),
    ("clip-nan", ["--trainer.gradient_clip_val", "nan"], ["trainer.gradient_clip_val must be a number", "'nan'"]),
    ("adam-betas", ["--model.init_args.optimizer.init_args.betas", "[0.9, 1.5]"], ["optimizer", "beta"]),
    ("lr-interval", ["--model.init_args.lr_interval", "weekly"], ["lr_interval", "weekly"]),
    ("batch-size-0", ["--data.init_args.batch_size", "0"], ["batch_size", ">= 1", "0"]),
    ("num-images-1", ["--data.init_args.num_images", "1"], ["num_images", "1"]),
    ("val-size-too-big", ["--data.init_args.val_size", "500"], ["val_size", "no training examples"]),
    ("val-size-part-count", ["--data.init_args.val_size", "1.5"], ["val_size", "whole number", "1.5"]),  # was 1
    ("val-size-inf", ["--data.init_args.val_size", "inf"], ["data.init_args.val_size must be a number", "inf"]),
    ("max-skips", ["--nonfinite.max_skips", "-1"], ["max_skips", ">= 0"]),
    ("background-images", ["--scores.background_images", "-1"], ["background_images", ">= 0", "-1"]),
    (
        "net-data-shape",
        [
            "--data",
            "vae_lightning.data.ImageFolderDataModule",
            "--data.init_args.data_dir",
            "{b}/images",
            "--data.init_args.image_size",
            "48",
            "--model.init_args.encoder",
            "vae_lightning.ConvEncoder",
        ],
        ["ConvEncoder", "48", "MLPEncoder"],
    ),
    (
        "bernoulli-gray",
        [
            "--data",
            "vae_lightning.data.ImageFolderDataModule",
            "--data.init_args.data_dir",
            "{b}/gray",
            "--data.init_args.image_size",
            "28",
            "--data.init_args.num_workers",
            "0",
            "--data.init_args.val_size",
            "1",
        ],
        ["Bernoulli", "gray", "vae_lightning.Gaussian"],
    ),
    (
        "missing-data",
        ["--data", "vae_lightning.data.MNISTDataModule", "--data.init_args.data_dir", "{b}/nothing"],
        ["nothing", "does not exist"],
    ),
    (
        "data-not-a-folder",
        [
            "--data",
            "vae_lightning.data.ImageFolderDataModule",
            "--data.init_args.data_dir",
            "{b}/a_file",
            "--data.init_args.num_workers",
            "0",
        ],
        ["a_file", "not a directory"],
    ),
    (
        "corrupt-image",
        [
            "--data",
            "vae_lightning.data.ImageFolderDataModule",
            "--data.init_args.data_dir",
            "{b}/images",
            "--data.init_args.image_size",
            "48",
            "--data.init_args.num_workers",
            "0",
        ],
        ["broken.png"],
    ),
    ("missing-ckpt", ["--ckpt_path", "{b}/nope.ckpt"], ["nope.ckpt", "no such"]),
    ("truncated-ckpt", ["--ckpt_path", "{b}/truncated.ckpt"], ["truncated.ckpt", "truncated or corrupt"]),
    ("other-class-ckpt", ["--ckpt_path", "{b}/beta.ckpt"], ["beta.ckpt", "BetaVAE", "VAE"]),
    ("other-latent-ckpt", ["--ckpt_path", "{b}/latent6.ckpt"], ["latent6.ckpt", "latent_dim=6", "latent_dim=4"]),
    ("no-gpu", ["--trainer.accelerator", "gpu"], ["trainer.accelerator", "no CUDA GPU"]),
    (
        "too-many-devices",
        ["--trainer.accelerator", "cpu", "--trainer.devices", str(CORES + 1)],
        ["trainer.devices", str(CORES + 1), "CPU cores"],
    ),
    (
        "precision-unsupported",
        ["--trainer.precision", "transformer-engine"],
        ["trainer.precision", "transformer-engine"],
    ),
    ("unwritable-root", ["--trainer.default_root_dir", "{b}/a_file/run"], ["trainer.default_root_dir", "a_file"]),
    ("trainer-range", ["--trainer.max_epochs", "-5"], ["max_epochs", "-5"]),
    ("clip-negative", ["--trainer.gradient_clip_val", "-1"], ["trainer.gradient_clip_val", ">= 0"]),
    ("config-missing", ["--config", "{b}/missing.yaml"], ["missing.yaml", "does not exist"]),
    # Lightning divides by these once the run has started (a ZeroDivisionError traceback)
    ("accumulate-0", ["--trainer.accumulate_grad_batches", "0"], ["trainer.accumulate_grad_batches", ">= 1"]),
    ("val-interval-0", ["--trainer.val_check_interval", "0"], ["trainer.val_check_interval", "> 0"]),
    ("val-every-0", ["--trainer.check_val_every_n_epoch", "0"], ["trainer.check_val_every_n_epoch", ">= 1"]),
    ("log-every-negative", ["--trainer.log_every_n_steps", "-1"], ["trainer.log_every_n_steps", ">= 0"]),
    ("min-steps-negative", ["--trainer.min_steps", "-2"], ["trainer.min_steps", ">= 0"]),
    ("sanity-steps", ["--trainer.num_sanity_val_steps", "-2"], ["trainer.num_sanity_val_steps", ">= -1"]),
    ("seed-negative", ["--seed_everything", "-5"], ["seed_everything", "2**32 - 1", "-5"]),
    ("seed-huge", ["--seed_everything", str(2**70)], ["seed_everything", str(2**70)]),
    (  # torch checks it only at the scheduler's first step: a ZeroDivisionError at step 1
        "steplr-step-0",
        [
            *("--model.init_args.lr_scheduler", "torch.optim.lr_scheduler.StepLR"),
            *("--model.init_args.lr_scheduler.init_args.step_size", "0"),
        ],
        ["lr_scheduler StepLR", "first step", "ZeroDivisionError"],
    ),
    # torch accepts these and trains with a learning rate <= 0 or inf (exit 0, a model that learnt nothing)
    (
        "exponential-gamma-negative",
        [
            *("--model.init_args.lr_scheduler", "torch.optim.lr_scheduler.ExponentialLR"),
            *("--model.init_args.lr_scheduler.init_args.gamma", "-1"),
        ],
        ["lr_scheduler ExponentialLR", "learning rate -0.001", "gamma=-1"],
    ),
    (
        "steplr-gamma-0",
        [
            *("--model.init_args.lr_scheduler", "torch.optim.lr_scheduler.StepLR"),
            *("--model.init_args.lr_scheduler.init_args.step_size", "1"),
            *("--model.init_args.lr_scheduler.init_args.gamma", "0"),
        ],
        ["lr_scheduler StepLR", "learning rate 0", "gamma=0"],
    ),
    (
        "cosine-eta-min-negative",
        [
            *("--model.init_args.lr_scheduler", "torch.optim.lr_scheduler.CosineAnnealingLR"),
            *("--model.init_args.lr_scheduler.init_args.T_max", "10"),
            *("--model.init_args.lr_scheduler.init_args.eta_min", "-1"),
        ],
        ["CosineAnnealingLR", "eta_min=-1"],
    ),
    (
        "plateau-factor-0",
        [
            *("--model.init_args.lr_scheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau"),
            *("--model.init_args.lr_interval", "epoch", "--model.init_args.lr_scheduler.init_args.factor", "0"),
        ],
        ["ReduceLROnPlateau factor must be > 0", "got 0"],
    ),
    (  # Lightning's MisconfigurationException at the first training step
        "plateau-every-step",
        ["--model.init_args.lr_scheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau"],
        ["ReduceLROnPlateau", "lr_interval: epoch"],
    ),
    (  # one grid decoded at once: 100000 steps ran out of memory at the first validation
        "images-traverse-grid",
        ["--images.every_n_val", "1", "--images.traverse_steps", "2000"],
        ["traverse_dims x traverse_steps", "20000", "4096"],
    ),
    ("images-interpolation-grid", ["--images.interpolation_steps", "5000"], ["interpolations x", "4096"]),
    # the process was killed for memory while it built the weights (no line at all)
    ("latent-huge", ["--model.init_args.latent_dim", str(10**11)], ["more than", "TB", "latent_dim (100000000000)"]),
    (
        "mlp-hidden-huge",
        ["--model.init_args.encoder.init_args.hidden", f"[{10**12}]"],
        ["encoder and decoder need more than", "nets' widths"],
    ),
    # out-of-range net sizes: the argument and its rule, not jsonargparse's dump of the model's arguments
    ("mlp-hidden-0", ["--model.init_args.encoder.init_args.hidden", "[0]"], ["MLPEncoder hidden", ">= 1", "[0]"]),
    ("mlp-hidden-negative", ["--model.init_args.decoder.init_args.hidden", "[16,-4]"], ["MLPDecoder hidden", "-4"]),
    (
        "conv-hidden-negative",
        ["--model.init_args.encoder", "vae_lightning.ConvEncoder", "--model.init_args.encoder.init_args.hidden", "-3"],
        ["model vae_lightning.VAE could not be built", "negative dimension -3"],
    ),
]


@pytest.mark.parametrize("case, extra, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_sentence_and_harms_nothing(case, extra, words, tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr("sys.argv", ["vae"])
    monkeypatch.delenv("VAE_DEBUG", raising=False)
    if torch.cuda.is_available() and case == "no-gpu":
        pytest.skip("this machine has a GPU")
    config, root = tiny_run["config"], Path(tiny_run["run"])  # a finished run whose files must stay as they are
    files = _files(tmp_path)
    _checkpoints(tmp_path, root)
    before = snapshot(root)
    extra = [a.replace("{b}", str(files["base"])) for a in extra]
    subcommand = "fit"
    code, err = vae(capsys, subcommand, "--config", str(config), "--trainer.default_root_dir", str(root), *extra)
    lines = [line for line in err.splitlines() if line.startswith("vae: error:")]
    assert code == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert len(lines) == 1, err[-2000:]
    message = lines[0]
    assert len(message) < 400 and "Namespace(" not in message, message
    for word in words:
        assert word in message, message
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before, "a file of the earlier run changed"
