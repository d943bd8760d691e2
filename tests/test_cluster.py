"""Cluster settings without a cluster: bf16 on the CPU, refused hardware settings, the W&B id of a
SLURM job, and `vae slurm submit --dry-run` for every template shape."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest

from helpers import FAKE_SLURM, REPO, tiny_args
from vae_lightning.cli import main
from vae_lightning.cli.slurm import TEMPLATES, job_from_args, render


def error_of(args, capsys) -> str:
    """Run `vae ARGS` in-process; it must exit 2 with one line on stderr."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vae: error:")]
    assert len(lines) == 1
    return lines[0]


@pytest.mark.slow
def test_bf16_mixed_fit_on_the_cpu_has_finite_losses(tmp_path):
    from vae_lightning.cli import run

    cli = run(
        [
            "fit",
            *tiny_args(
                trainer__accelerator="cpu",
                trainer__precision="bf16-mixed",
                trainer__max_steps=20,
                trainer__val_check_interval=10,
                trainer__log_every_n_steps=5,  # train metrics exist on the written steps
            ),
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    assert cli.trainer.precision == "bf16-mixed"
    metrics = cli.trainer.callback_metrics
    for key in ("train/loss", "val/loss", "val/kl", "val/recon", "val/elbo"):
        assert math.isfinite(float(metrics[key])), (key, metrics[key])


@pytest.mark.parametrize(
    "args, words",
    [
        (["--trainer.accelerator", "cpu", "--trainer.precision", "16-mixed"], "bf16-mixed"),
        (["--trainer.accelerator", "cpu", "--trainer.devices", "4096"], "devices=4096"),
        (["--trainer.accelerator", "gpu", "--trainer.devices", "1"], "CUDA GPUs"),
    ],
    ids=["16-mixed-on-cpu", "more-cpu-devices-than-cores", "gpu-without-gpu"],
)
def test_impossible_hardware_settings_are_one_line_errors(args, words, capsys):
    if "gpu" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    assert words in error_of(["fit", *tiny_args(), *args], capsys)


def test_devices_that_differ_from_slurm_tasks_are_one_line_errors(monkeypatch, capsys):
    for name, value in FAKE_SLURM.items():
        monkeypatch.setenv(name, value)
    line = error_of(
        ["fit", *tiny_args(), "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"],
        capsys,
    )
    assert "trainer.devices=2" in line and "--ntasks-per-node=1" in line


@pytest.mark.slow
def test_a_slurm_job_names_its_wandb_run_after_the_job_and_allows_resuming(tmp_path, monkeypatch):
    """The restart itself is checked on the real cluster (test_slurm.py)."""
    import wandb

    from vae_lightning.cli import run

    for name, value in FAKE_SLURM.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cli = run(
        [
            "fit",
            *tiny_args(),
            "--config",
            str(REPO / "configs/base.yaml"),  # its W&B logger
            "--trainer.accelerator",
            "cpu",
            "--trainer.max_steps",
            "2",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    try:
        assert cli.trainer.logger.experiment.id == "slurm-4242"
        assert cli.trainer.logger._wandb_init["resume"] == "allow"
    finally:
        wandb.finish()
        wandb.teardown()  # stop this process's W&B service (its token is in os.environ otherwise)
    assert [f.name.endswith("-slurm-4242") for f in (tmp_path / "wandb").glob("offline-run-*")] == [True]


# ---- vae slurm submit ----------------------------------------------------------------------------


def dry_run(*args: str, cwd: Path = REPO) -> str:
    path = f"{Path(os.sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # `vae` on PATH: scripts say `vae`
    result = subprocess.run(
        ["vae", "slurm", "submit", *args, "--dry-run"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("name", list(TEMPLATES))
@pytest.mark.slow
def test_dry_run_of_every_template_shape_is_valid_bash_with_the_directives(name, tmp_path):
    script = dry_run(*TEMPLATES[name])
    path = tmp_path / name
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    directives = dict(
        line.removeprefix("#SBATCH --").partition("=")[::2]
        for line in script.splitlines()
        if line.startswith("#SBATCH")
    )
    args = TEMPLATES[name]
    gpus = args[args.index("--gpus-per-node") + 1]
    nodes = args[args.index("--nodes") + 1] if "--nodes" in args else "1"
    assert directives["ntasks-per-node"] == gpus == directives["gpus-per-node"]
    assert directives["nodes"] == nodes
    assert directives["signal"] == "USR1@120" and directives["open-mode"] == "append" and "requeue" in directives
    assert f"\n    --trainer.devices {gpus}\n" in script and f"\n    --trainer.num_nodes {nodes}\n" in script
    assert '\nsrun --kill-on-bad-exit=1 vae fit "${ARGS[@]}"\n' in script
    if "--array" in args:
        assert directives["array"] == "0-4" and '--model.init_args.beta "${V0[$I]}"' in script


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_shipped_templates_are_the_rendered_ones(name):
    job, _ = job_from_args([*TEMPLATES[name], "--dry-run"])
    assert (REPO / "slurm" / name).read_text() == render(job), "regenerate with vae_lightning.cli.slurm.write_templates"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--nodes", "-1"], "--nodes must be >= 1, got -1"),
        (["--gpus-per-node", "2", "--ntasks-per-node", "1"], "--ntasks-per-node 1 must equal --gpus-per-node 2"),
        (["--gpus-per-node", "0", "--", "--trainer.precision", "16-mixed"], "needs a CUDA GPU"),
        (["--array", "model.init_args.beta="], "--array takes KEY=V1,V2"),
    ],
    ids=["negative-nodes", "tasks-not-devices", "16-mixed-on-cpu", "empty-array"],
)
def test_bad_submit_options_are_one_line_errors(args, words, capsys):
    assert words in error_of(["slurm", "submit", "--config", str(REPO / "configs/base.yaml"), *args], capsys)


def test_submit_without_sbatch_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")
    line = error_of(["slurm", "submit", "--config", str(REPO / "configs/base.yaml")], capsys)
    assert "sbatch was not found" in line


@pytest.mark.slow
def test_wandb_sweep_command_runs_vae_fit_with_the_swept_value_in_its_own_folder():
    """Build the command as W&B's agent does (its own helpers) and run it with --print_config."""
    import yaml
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    sweep = yaml.safe_load((REPO / "configs/sweeps/beta_vae_sprites.yaml").read_text())
    flags = create_sweep_command_args({"args": {"model.init_args.beta": {"value": 8}}})["args"]
    command = []
    for part in create_sweep_command(sweep["command"]):
        command += [*flags, "--print_config"] if part == "${args}" else [part]
    bin_dir = Path(os.sys.executable).parent
    env = {**os.environ, "WANDB_RUN_ID": "abc123", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    config = yaml.safe_load(result.stdout)
    assert config["model"]["init_args"]["beta"] == 8
    assert config["trainer"]["default_root_dir"] == "runs/sweep-beta/abc123"
    logger = config["trainer"]["logger"]["init_args"]
    assert (logger["group"], logger["job_type"], logger["tags"], logger["offline"]) == (
        "sweep-beta",
        "fit",
        ["sweep"],
        False,
    )


@pytest.mark.parametrize("test", [True, False], ids=["with-test", "fit-only"])
def test_resubmitting_a_changed_setting_into_a_done_task_folder_is_refused(test, tmp_path, monkeypatch, capsys):
    """Issue 24: a task folder with a finished fit (``fit.done``) made the job skip the fit and re-test
    the old checkpoint, so a resubmission with another ``--trainer.max_steps`` ended COMPLETED with the
    old result. The same settings are still submitted; a changed one is refused, naming the key."""
    import yaml

    from vae_lightning.cli import study
    from vae_lightning.cli.study_identity import resolve

    monkeypatch.chdir(tmp_path)
    submit = ["slurm", "submit", *tiny_args(), "--study", "s", "--array", "seed_everything=0,1", "--dry-run"]
    submit += ["--test"] if test else []
    capsys.readouterr()
    main(submit)  # nothing there yet: no config to compare
    assert "#SBATCH --array=0-1" in capsys.readouterr().out
    folder = tmp_path / "runs/s" / study.folder([("seed_everything", "1")])
    # what the job's fit saved: the script adds the allocation's shape (one GPU by default)
    args = [*tiny_args(), "--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.num_nodes", "1"]
    saved = resolve([*args, "--trainer.default_root_dir", str(folder), *study.point_args([("seed_everything", "1")])])
    (folder / "checkpoints/slurm-7").mkdir(parents=True)
    (folder / "checkpoints/slurm-7/vae_config.yaml").write_text(yaml.safe_dump(saved))
    (folder / study.DONE_FILE).write_text("")
    before = sorted(p for p in tmp_path.rglob("*"))
    main(submit)  # the same settings: that fit is this task's
    assert "#SBATCH --array=0-1" in capsys.readouterr().out
    line = error_of([*submit, "--", "--trainer.max_steps", "5"], capsys)
    assert "differs at trainer.max_steps" in line and "seed_everything=1" in line and "Nothing was submitted" in line
    assert sorted(p for p in tmp_path.rglob("*")) == before
