"""Studies without a cluster: the grid of `vae slurm submit`, the same test set for every seed,
provenance in every run, and evaluations that continue their fit's W&B run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import REPO, TINY_NETS, write_mnist_raw
from vae_lightning.cli.slurm import job_from_args, render
from vae_lightning.cli.study import folder, grid_from, tasks
from vae_lightning.data.base import images
from vae_lightning.data.sprites import SpritesDataModule
from vae_lightning.data.vision import MNISTDataModule
from vae_lightning.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))  # wandb_offline, the offline run reader


# ---- the same test set for every seed (item 5) ---------------------------------------------------


def _batches(loader) -> torch.Tensor:
    return torch.cat([images(b) for b in loader])


def test_two_seeds_see_identical_mnist_val_and_test_tensors_but_train_differently(tmp_path):
    g = torch.Generator().manual_seed(3)
    gray = torch.randint(0, 256, (300, 28, 28), generator=g, dtype=torch.uint8)  # every pixel a coin of its own
    root = write_mnist_raw(tmp_path, "MNIST", gray, torch.zeros(300, dtype=torch.long), n_train=200)
    seen = {}
    for seed in (0, 1):
        data = MNISTDataModule(data_dir=str(root), seed=seed, val_size=50, batch_size=25)
        data.setup("fit")
        data.setup("test")
        seen[seed] = (
            _batches(data.val_dataloader()),
            _batches(data.test_dataloader()),
            _batches(data.train_dataloader()),
        )
    assert torch.equal(seen[0][0], seen[1][0]), "validation images differ between seeds"
    assert torch.equal(seen[0][1], seen[1][1]), "test images differ between seeds"
    assert set(seen[0][1].unique().tolist()) == {0.0, 1.0}  # the fixed binarization did run
    assert not torch.equal(seen[0][2], seen[1][2])  # the training stream still follows the seed


def test_two_seeds_see_identical_sprites_test_tensors():
    tests = []
    for seed in (0, 1):
        data = SpritesDataModule(seed=seed, num_images=500, val_size=40, batch_size=16)
        data.setup("test")
        tests.append(_batches(data.test_dataloader()))
    assert tests[0].shape == (40, 1, 64, 64) and torch.equal(tests[0], tests[1])


def test_split_seed_changes_the_test_set():
    a, b = SpritesDataModule(num_images=500, val_size=40), SpritesDataModule(num_images=500, val_size=40, split_seed=1)
    a.setup("test"), b.setup("test")
    assert not torch.equal(a.test_idx, b.test_idx)


# ---- grids (item 4) -------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_in_key_order():
    grid = grid_from(["model.init_args.beta=1,4", "model.init_args.latent_dim=2,3,5"], "0,1")
    combos = tasks(grid)
    assert len(combos) == 12
    assert folder(combos[0]) == "model.init_args.beta=1,model.init_args.latent_dim=2,seed_everything=0"
    assert folder(combos[-1]) == "model.init_args.beta=4,model.init_args.latent_dim=5,seed_everything=1"
    assert len({folder(c) for c in combos}) == 12


@pytest.mark.parametrize(
    "arrays, seeds, words",
    [
        (["model.init_args.beta=1,2", "model.init_args.beta=3"], None, "'model.init_args.beta' is swept twice"),
        (["seed_everything=1"], "0,1", "--seeds sets it"),
        (["model.init_args.beta"], None, "--array takes KEY=V1,V2"),
    ],
)
def test_bad_grids_are_refused_in_one_sentence(arrays, seeds, words):
    with pytest.raises(UserError, match=words):
        grid_from(arrays, seeds)


@pytest.mark.slow
def test_dry_run_of_a_study_gives_each_array_task_its_folder_name_and_tags(tmp_path):
    job, _ = job_from_args(
        [
            "--config",
            str(REPO / "configs/base.yaml"),
            "--gpus-per-node",
            "0",
            "--study",
            "betas",
            "--array",
            "model.init_args.beta=1,4",
            "--seeds",
            "0,1",
            "--test",
            "--dry-run",
        ]
    )
    script = render(job)
    assert "#SBATCH --array=0-3\n" in script
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    # run the script's task-selection lines as bash would in array task 2
    lines = script.splitlines()
    head = "\n".join(
        lines[
            lines.index("I=$SLURM_ARRAY_TASK_ID") : next(i for i, line in enumerate(lines) if line.startswith("ROOT="))
            + 1
        ]
    )
    show = 'echo "$ROOT|${NAMES[$I]}|${TAGS[$I]}|${V0[$I]}|${V1[$I]}"'
    out = subprocess.run(
        ["bash", "-c", f"{head}\n{show}"], env={"SLURM_ARRAY_TASK_ID": "2"}, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == (
        "runs/betas/model.init_args.beta=4,seed_everything=0|beta=4,seed_everything=0|"
        "[slurm, study, beta=4, seed_everything=0]|4|0"
    )
    assert '--model.init_args.beta "${V0[$I]}"' in script and '--seed_everything "${V1[$I]}"' in script
    assert "--trainer.logger.init_args.group betas" in script
    # the test runs after the fit, on the best checkpoint; a requeued job with the fit done only tests
    fit, test = (
        script.index('srun --kill-on-bad-exit=1 vae fit "${ARGS[@]}" --preemption.done_file "$DONE"'),
        script.index('srun --kill-on-bad-exit=1 vae test "${ARGS[@]}" --ckpt_path best'),
    )
    assert fit < script.index("[[ -f $DONE ]] || exit 0") < test


# ---- provenance (item 6) and evaluations in their fit's run (items 1, 2) ----------------------------

TINY = [
    "--config",
    str(REPO / "configs/base.yaml"),
    "--model",
    "vae_lightning.VAE",
    *TINY_NETS,
    "--model.init_args.latent_dim",
    "3",
    "--data.init_args.num_images",
    "200",
    "--data.init_args.val_size",
    "32",
    "--data.init_args.batch_size",
    "16",
    "--trainer.enable_progress_bar",
    "false",
    "--images.every_n_val",
    "0",
    "--trainer.max_steps",
    "10",
    "--trainer.val_check_interval",
    "5",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.log_every_n_steps",
    "2",
    "--model.init_args.iw_samples",
    "2",
    "--disentanglement.enabled",
    "false",
    "--collapse.every_n_val",
    "0",
]


def _run(args: list[str]):
    import wandb

    from vae_lightning.cli import run

    try:
        return run(args)
    finally:
        wandb.finish()
        wandb.teardown()  # this process's W&B service must not outlive the run


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    import os

    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    root = tmp_path_factory.mktemp("fit") / "run"
    _run(["fit", *TINY, "--trainer.default_root_dir", str(root)])
    return root


def _wandb(root):
    from wandb_offline import merged

    return merged(root / "wandb")


@pytest.mark.slow
def test_a_fit_records_its_provenance_in_its_folder_and_wandb_config(fitted):
    import json

    from vae_lightning.runtime.provenance import config_hash

    record = json.loads((fitted / "checkpoints/version_0/provenance.json").read_text())
    assert (fitted / "checkpoints/version_0/vae_config.yaml").is_file()
    assert record["versions"]["torch"] == torch.__version__.split("+")[0] or record["versions"]["torch"]
    assert record["data"] == {
        "class": "vae_lightning.data.sprites.SpritesDataModule",
        "checksum_or_version": "sprites-generator-v2",
        "split_seed": 0,
        "binarize": "none",
    }
    assert (record["device"], record["precision"], record["world_size"]) == ("cpu", "32-true", 1)
    assert len(record["config_hash"]) == 16 and record["code_version"]
    import yaml

    config = yaml.safe_load((fitted / "checkpoints/version_0/vae_config.yaml").read_text())
    assert record["config_hash"] == config_hash(config)
    assert _wandb(fitted)["config"]["provenance"]["config_hash"] == record["config_hash"]


def test_config_hash_follows_the_config():
    from vae_lightning.runtime.provenance import config_hash

    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


@pytest.mark.slow
def test_a_test_of_the_fits_checkpoint_continues_its_wandb_run_and_a_separate_one_links_to_it(fitted):
    fit_id = next(iter(_wandb(fitted)["ids"]))
    _run(["test", *TINY, "--trainer.default_root_dir", str(fitted), "--ckpt_path", "best"])
    run = _wandb(fitted)
    assert run["ids"] == {fit_id} and len(run["folders"]) == 2
    tested = [row for row in run["history"] if "test/elbo" in row]
    assert len(tested) == 1
    assert run["config"]["model"]["init_args"]["latent_dim"] == 3 and "provenance_test" in run["config"]
    tables = {k for row in run["history"] for k in row if k.startswith("test/kl_per_dim/")}
    assert "test/kl_per_dim/_type" in tables  # the per-dimension KL as one W&B table

    _run(["test", *TINY, "--trainer.default_root_dir", str(fitted), "--ckpt_path", "best", "--eval_run", "separate"])
    runs = _wandb(fitted)
    assert len(runs["ids"]) == 2
    separate = next(r for r in runs["runs"] if r.run_id != fit_id)
    assert separate.job_type == "eval"
    folder = next(f for f in runs["folders"] if not f.name.endswith(fit_id))
    from wandb_offline import records

    config = {}
    for record in records(next(folder.glob("run-*.wandb"))):
        if record.WhichOneof("record_type") == "config":
            config.update({i.key: i.value_json for i in record.config.update})
    assert config["fit_run_id"] == f'"{fit_id}"'


@pytest.mark.slow
def test_csv_logs_of_a_test_go_below_the_fits_version_folder_and_a_rerun_adds_no_rows(tmp_path):
    csv = ["--config", str(REPO / "configs/logger/csv.yaml")]
    root = tmp_path / "run"
    _run(["fit", *TINY[2:], *csv, "--trainer.default_root_dir", str(root)])  # TINY[2:]: without base.yaml's W&B
    fit_csv = root / "csv/version_0/metrics.csv"
    before = fit_csv.read_text()
    for _ in range(2):  # the second is a requeued evaluation
        _run(["test", *TINY[2:], *csv, "--trainer.default_root_dir", str(root), "--ckpt_path", "best"])
    test_csv = root / "csv/version_0/test/metrics.csv"
    rows = test_csv.read_text().splitlines()
    assert len(rows) == 2 and "test/elbo" in rows[0], rows  # header + one row
    assert fit_csv.read_text() == before
