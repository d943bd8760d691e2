"""The `vae` command: shipped configs parse, every sprites variant trains end to end through the
real entry point with W&B offline, checkpoints load and resume, bad values get one sentence."""

import csv
from pathlib import Path

import pytest
import torch
import yaml

from helpers import REPO, run_vae
from vae_lightning import DIPVAE, IWAE, VAE, BetaTCVAE, BetaVAE, FactorVAE, FreeBitsVAE
from vae_lightning.cli import main
from vae_lightning.cli.lightning import VAECLI

CONFIGS = REPO / "configs"
# every YAML under configs/ has one role; test_every_yaml_under_configs_has_a_role fails on a file outside them
EXPERIMENTS = sorted(p for d in CONFIGS.iterdir() if (d / "vae.yaml").is_file() for p in d.glob("*.yaml"))
VARIANTS = [p for p in EXPERIMENTS if p.name != "vae.yaml"]  # stacked on their folder's vae.yaml
LAYERS = sorted([*CONFIGS.glob("logger/*.yaml"), *CONFIGS.glob("trainer/*.yaml"), CONFIGS / "demo.yaml"])
MODEL_BLOCKS = sorted(CONFIGS.glob("model/*.yaml"))  # subclass values (a model, a decoder) experiments name by path
SWEEPS = sorted(CONFIGS.glob("sweeps/*.yaml"))  # W&B sweep files; their command is parsed below
STUDIES = sorted(CONFIGS.glob("studies/*.yaml"))  # study files: tests/test_study_file.py resolves their tasks
SPRITES = {
    "sprites/vae.yaml": VAE,
    "sprites/beta_vae.yaml": BetaVAE,
    "sprites/beta_vae_capacity.yaml": BetaVAE,
    "sprites/free_bits.yaml": FreeBitsVAE,
    "sprites/beta_tcvae.yaml": BetaTCVAE,
    "sprites/factor_vae.yaml": FactorVAE,
    "sprites/dip_vae_i.yaml": DIPVAE,
    "sprites/dip_vae_ii.yaml": DIPVAE,
    "sprites/iwae.yaml": IWAE,
    "sprites/annealed_vae.yaml": BetaVAE,
}
# small and quick: a few thousand sprites, short validation, batch 16
QUICK = [
    "--data.init_args.num_images",
    "3000",
    "--data.init_args.val_size",
    "200",
    "--data.init_args.batch_size",
    "16",
    "--trainer.val_check_interval",
    "10",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.log_every_n_steps",
    "5",
    "--trainer.enable_progress_bar",
    "false",
]


def test_help_is_instant_and_lists_the_subcommands(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("fit", "validate", "test", "predict"))


def _name(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


def stack(path: Path) -> list[str]:
    """The ``--config`` arguments of a shipped experiment: base.yaml, its folder's vae.yaml, the file itself."""
    files = dict.fromkeys([CONFIGS / "base.yaml", path.parent / "vae.yaml", path])
    return [arg for file in files for arg in ("--config", str(file))]


def printed_config(args: list[str], capsys) -> dict:
    """The whole run config that `vae fit ... --print_config` prints, as a dict."""
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *args, "--print_config"])
    assert exit_.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def _contains(whole, part) -> bool:
    """Whether every value set in ``part`` (a parsed YAML file) has the same value in ``whole``."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and _contains(whole[k], v) for k, v in part.items())
    if isinstance(part, list) and part and isinstance(part[0], dict):  # e.g. trainer.callbacks
        return isinstance(whole, list) and len(whole) == len(part) and all(map(_contains, whole, part))
    return whole == part


def test_every_yaml_under_configs_has_a_role():
    roles = {CONFIGS / "base.yaml", *EXPERIMENTS, *LAYERS, *MODEL_BLOCKS, *SWEEPS, *STUDIES}
    strays = [_name(p) for p in sorted(CONFIGS.rglob("*.y*ml")) if p not in roles]
    assert not strays, f"{strays}: give each file a role (and so a test) at the top of tests/test_cli.py"
    assert {p.parent.name for p in EXPERIMENTS} >= {"sprites", "mnist", "cifar10", "celeba"}


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=_name)
def test_every_shipped_experiment_builds_its_classes(experiment, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing is written into the repository; paths in configs are file-relative
    cli = VAECLI(args=stack(experiment), run=False)
    assert isinstance(cli.model, VAE) and cli.model.image_shape == tuple(cli.datamodule.image_shape)
    model = yaml.safe_load(experiment.read_text()).get("model")
    if isinstance(model, dict):  # a variant names its class; the nets come from its folder's vae.yaml
        assert f"{type(cli.model).__module__.split('.')[0]}.{type(cli.model).__name__}" == model["class_path"]


@pytest.mark.parametrize("variant", VARIANTS, ids=_name)
def test_a_variant_keeps_the_model_block_of_its_vae_yaml(variant, capsys):
    """jsonargparse keeps init_args when a later --config changes only the class_path (and the
    keys the variant sets itself, e.g. the decoder of configs/mnist/pixelcnn*.yaml)."""
    base = printed_config(stack(variant.parent / "vae.yaml"), capsys)["model"]["init_args"]
    model = printed_config(stack(variant), capsys)["model"]["init_args"]
    own = ((yaml.safe_load(variant.read_text()).get("model") or {}).get("init_args") or {}).keys()
    # a model that builds its own nets (HierarchicalVAE) has no encoder, decoder or latent_dim to keep
    kept = [k for k in ("encoder", "decoder", "likelihood", "optimizer", "latent_dim") if k in model and k not in own]
    assert {"likelihood", "optimizer"} - set(own) <= set(kept)
    for key in kept:
        assert model[key] == base[key], key


def test_every_model_block_is_named_by_an_experiment():
    for block in MODEL_BLOCKS:
        assert any(f": ../model/{block.name}" in p.read_text() for p in EXPERIMENTS), _name(block)


@pytest.mark.parametrize("layer", LAYERS, ids=_name)
def test_stackable_layers_compose(layer, capsys):
    whole = printed_config([*stack(CONFIGS / "sprites/vae.yaml"), "--config", str(layer)], capsys)
    assert _contains(whole, yaml.safe_load(layer.read_text()))


@pytest.mark.parametrize("sweep", SWEEPS, ids=_name)
def test_every_sweep_command_names_configs_that_parse(sweep, capsys):
    spec = yaml.safe_load(sweep.read_text())
    words = " ".join(spec["command"]).split()
    configs = [words[i + 1] for i, word in enumerate(words) if word == "--config"]
    assert configs and all((REPO / c).is_file() for c in configs)
    whole = printed_config([arg for c in configs for arg in ("--config", str(REPO / c))], capsys)
    for key in spec["parameters"]:  # every swept key exists in the run config
        node = whole
        for part in key.split("."):
            node = node[part]


# the layers a CPU can build (ddp.yaml wants GPUs, fp16.yaml CUDA, ddp_cpu.yaml 2 free cores)
CPU_LAYERS = [p for p in LAYERS if p.parent.name == "logger" or p.name in ("demo.yaml", "bf16.yaml")]


@pytest.mark.parametrize("layer", CPU_LAYERS, ids=_name)
def test_cpu_layers_build_a_trainer(layer, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cli = VAECLI(args=[*stack(CONFIGS / "sprites/vae.yaml"), "--config", str(layer)], run=False)
    assert cli.trainer is not None


def test_print_config_shows_the_whole_run(capsys):
    whole = printed_config(stack(CONFIGS / "sprites/free_bits.yaml"), capsys)
    assert whole["model"]["class_path"] == "vae_lightning.FreeBitsVAE"
    assert whole["model"]["init_args"]["free_bits"] == 0.25
    assert whole["trainer"]["logger"]["class_path"].endswith("WandbLogger")
    assert whole["data"]["class_path"] == "vae_lightning.data.SpritesDataModule"
    assert whole["checkpoint"]["monitor"] == "val/loss"


def _last_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(SPRITES))
def test_sprites_variant_trains_logs_to_wandb_offline_and_resumes(experiment, tmp_path):
    root = tmp_path / "run"
    common = [*stack(CONFIGS / experiment), *QUICK, "--trainer.default_root_dir", str(root)]
    first = run_vae("fit", *common, "--trainer.max_steps", "20")
    assert first.returncode == 0, first.stderr[-3000:]

    # W&B offline: the run folder exists, holds the metric keys and the plain config
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    record = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in (
        b"train/loss",
        b"train/recon",
        b"train/kl",
        b"train/elbo",
        b"train/kl_weight",
        b"val/loss",
        b"val/elbo",
    ):
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
    second = run_vae(
        "fit", *common, "--config", "configs/logger/csv.yaml", "--trainer.max_steps", "35", "--ckpt_path", "last"
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert _last_step(last) == 35
    rows = list(csv.DictReader(open(next((root / "csv").glob("version_*/metrics.csv")))))
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps and min(steps) >= 20 and max(steps) >= 30


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (
            [
                "--config",
                "configs/sprites/vae.yaml",
                "--config",
                "configs/sprites/beta_vae.yaml",
                "--model.init_args.beta",
                "-1",
            ],
            "beta must be >= 0, got -1.0.",
        ),
        (["--config", "configs/sprites/vae.yaml", "--model.init_args.latent_dims", "3"], "latent_dims"),
        (
            ["--config", "configs/mnist/vae.yaml", "--data.init_args.data_dir", "/no/such/dir"],
            "data_dir '/no/such/dir' does not exist",
        ),
        (
            ["--config", "configs/sprites/vae.yaml", "--model.init_args.image_shape", "[1,28,28]"],
            "image_shape is (1, 28, 28) but SpritesDataModule yields (1, 64, 64)",
        ),
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
    result = run_vae(
        "fit",
        "--config",
        "configs/base.yaml",
        "--config",
        "configs/mnist/vae.yaml",
        "--config",
        "configs/logger/csv.yaml",
        "--data.init_args.data_dir",
        str(mnist_dir),
        "--data.init_args.val_size",
        "500",
        "--trainer.max_steps",
        "30",
        "--trainer.val_check_interval",
        "15",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.log_every_n_steps",
        "5",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(root),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(next((root / "csv").glob("version_*/metrics.csv")))))
    elbos = [float(r["val/elbo"]) for r in rows if r.get("val/elbo")]
    # nats per 784 binary pixels: starts near -784·ln 2 = -543 and improves within 30 steps
    assert len(elbos) == 2 and -600 < elbos[0] < elbos[1] < 0
    config = (next((root / "csv").glob("version_*")) / "vae_config.yaml").read_text()
    assert "binarize: dynamic" in config  # the binarization is part of the logged config


def test_a_run_drops_lightnings_nvml_cuda_check_only_without_a_gpu(monkeypatch):
    import os

    from vae_lightning.cli.lightning import drop_nvml_cuda_check

    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # what importing Lightning sets
    drop_nvml_cuda_check()
    assert ("PYTORCH_NVML_BASED_CUDA_CHECK" in os.environ) == (torch.cuda.device_count() > 0)
