"""`vae study run` on this machine (issue 24 items 1, 2, 5): every task of a two-entry study fits and
tests in the folder its config names; run again, finished tasks are skipped; an interrupted task
resumes from its last checkpoint; a changed setting is a new task that fits again (never a reuse)."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

from helpers import REPO, TINY_NETS, tree
from vae_lightning.cli import main, study_command
from wandb_offline import api_run, merged

pytestmark = pytest.mark.slow

FAST = [
    *TINY_NETS,
    "--data.init_args.num_images",
    "200",
    "--data.init_args.val_size",
    "32",
    "--data.init_args.batch_size",
    "16",
    "--trainer.max_steps",
    "6",
    "--trainer.val_check_interval",
    "3",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.enable_progress_bar",
    "false",
    "--images.every_n_val",
    "0",
    "--model.init_args.iw_samples",
    "2",
    "--disentanglement.enabled",
    "false",
    "--collapse.every_n_val",
    "0",
]


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    base = str(REPO / "configs/base.yaml")
    data = {
        "name": "two",
        "seeds": [0],
        "args": FAST,
        "entries": [
            {
                "name": "beta",
                "config": [base],
                "grid": {"model.init_args.beta": [4]},
                "args": ["--model", "vae_lightning.BetaVAE"],
            },
            {"name": "tc", "config": [base, str(REPO / "configs/sprites/beta_tcvae.yaml")]},
        ],
    }
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(data))
    return tmp_path


def _folders(root):
    return sorted(p for p in (root / "runs/two").iterdir() if p.is_dir())


def _step(folder) -> int:
    return torch.load(next(folder.glob("checkpoints/*/last.ckpt")), weights_only=False)["global_step"]


def check_wandb_runs(folders, restarts: list[int]) -> None:
    """Each task has one W&B run (id ``<study>-<hash>``) with group = the study, job_type = its entry
    (the fit's and the test's: one run), the grid point in its config and the task's record
    (``study_task``: restarts, whole wall time and steps as its folder's); and these runs, as the
    W&B API would show them once synced, give `vae compare` the runs and groups tables of the folders."""
    from fabricated_study import RecordedRun

    from vae_lightning.cli.compare import tables
    from vae_lightning.evaluation import compare as c
    from vae_lightning.evaluation.compare_wandb import convert

    records = [api_run(folder / "wandb") for folder in folders]
    for folder, record, n in zip(folders, records, restarts, strict=True):
        task = json.loads((folder / "task.json").read_text())
        run = merged(folder / "wandb")
        assert run["ids"] == {f"two-{task['hash']}"}
        assert {(r.run_group, r.job_type) for r in run["runs"]} == {("two", task["entry"])}
        assert any("test/elbo" in row for row in run["history"])  # the test logged into the fit's run
        assert record["config"]["study_task"] == {
            **{k: task[k] for k in ("entry", "seed", "hash")},
            "point": {k: float(v) for k, v in task["point"].items()},
        }
        folder_task = c.read_task(folder)
        steps = json.loads(next(folder.glob("checkpoints/*/summary.json")).read_text())["step"]
        assert record["summary"]["study_task"] == {"restarts": n, "wall_time": folder_task["wall_time"], "steps": steps}
    metrics = ["test/elbo", "test/kl", "test/recon"]
    from_folders = c.find_runs([], str(folders[0].parent))[0]
    from_wandb = [convert(RecordedRun(r)) for r in records]
    ours, theirs = tables(from_wandb, metrics, None), tables(from_folders, metrics, None)
    assert ours[1].columns == theirs[1].columns and ours[3].columns == theirs[3].columns
    assert ours[1].rows == theirs[1].rows and ours[3].rows == theirs[3].rows


def test_run_skip_resume_and_a_changed_setting_fits_again(study, capsys):
    main(["study", "run", "two.yaml", "--test"])
    folders = _folders(study)
    assert [f.name.rsplit("-", 1)[0] for f in folders] == ["beta,beta=4,seed=0", "tc,seed=0"]
    for folder in folders:
        assert (folder / study_command.FINISHED_FILE).is_file() and _step(folder) == 6
        summary = json.loads(next(folder.glob("checkpoints/*/summary.json")).read_text())
        assert "test/elbo" in summary  # fit and test in the task's folder
        saved = yaml.safe_load(next(folder.glob("checkpoints/*/vae_config.yaml")).read_text())
        assert saved["model"]["class_path"] == (
            "vae_lightning.BetaVAE" if "beta" in folder.name else "vae_lightning.BetaTCVAE"
        )
        assert saved["trainer"]["logger"]["init_args"]["job_type"] == folder.name.split(",")[0]
        assert saved["trainer"]["logger"]["init_args"]["group"] == "two"
    tc = saved["model"]["init_args"]
    assert (tc["beta"], tc["estimator"]) == (6.0, "mss")  # the entry's own config, nothing carried over
    check_wandb_runs(folders, restarts=[0, 0])

    # again: nothing runs, nothing changes
    before = tree(study / "runs/two")
    capsys.readouterr()
    main(["study", "run", "two.yaml", "--test"])
    assert capsys.readouterr().out.count("finished, skipped") == 2
    assert {k: v for k, v in tree(study / "runs/two").items() if not k.endswith("study.json")} == {
        k: v for k, v in before.items() if not k.endswith("study.json")
    }

    # an interrupted task (no end marker) resumes from its last checkpoint, in its own folder
    for name in (study_command.FINISHED_FILE, "fit.done"):
        (folders[1] / name).unlink()
    stale = folders[1] / "hpc_ckpt_1.ckpt"  # older than last.ckpt: the fit resumes from last.ckpt
    stale.write_text("")
    os.utime(stale, (1e9, 1e9))
    main(["study", "run", "two.yaml"])
    assert (folders[1] / study_command.FINISHED_FILE).is_file()
    assert not stale.exists()  # a finished task keeps no SLURM checkpoint
    assert len(list(folders[1].glob("checkpoints/*/last.ckpt"))) == 1  # resumed, not a second version
    assert (folders[1] / study_command.STARTS_FILE).read_text().count("\n") == 2
    check_wandb_runs(folders, restarts=[0, 1])  # the resumed fit's start counted in its W&B run too

    # a changed setting: new folders, new fits (8 steps), the old folders untouched
    old = tree(study / "runs/two")
    main(["study", "run", "two.yaml", "--", "--trainer.max_steps", "8"])
    new = [f for f in _folders(study) if f not in folders]
    assert len(new) == 2 and all(_step(f) == 8 for f in new)
    assert all(_step(f) == 6 for f in folders)
    assert {k: v for k, v in tree(study / "runs/two").items() if k in old and not k.endswith("study.json")} == {
        k: v for k, v in old.items() if not k.endswith("study.json")
    }

    capsys.readouterr()
    main(["study", "status", "runs/two"])
    out = capsys.readouterr().out
    assert out.count(" finished ") == 2 and "8 " in out and "2 tasks: 2 finished" in out  # the latest run's tasks
    assert os.path.isfile(study / "runs/two/study.json")


def test_only_runs_those_tasks_and_status_still_lists_them_all(study, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(study_command, "run_one", lambda folder, argv, test: ran.append(folder.name))
    main(["study", "run", "two.yaml"])
    assert len(ran) == 2
    first = ran[0].rsplit("-", 1)[1]
    ran.clear()
    main(["study", "run", "two.yaml", "--only", first])
    assert len(ran) == 1 and ran[0].endswith(first)
    record = json.loads((study / "runs/two/study.json").read_text())
    assert len(record["tasks"]) == 2  # the whole study, not just the --only tasks
    capsys.readouterr()
    main(["study", "status", "runs/two"])
    assert "2 tasks:" in capsys.readouterr().out
