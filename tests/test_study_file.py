"""Study files without training (issue 24 items 1-3, 5): the file's checks, the tasks it makes, the
identity of a task (the hash of its resolved config), the refusal of a folder that holds another
config, `vae study submit --dry-run`, and `vae study status` of a study's folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from helpers import REPO, TINY_NETS, tree, unquoted
from vae_lightning.cli import main, study_command, study_file, study_status
from vae_lightning.cli.study_identity import first_difference, identity, resolve, task_hash
from vae_lightning.errors import UserError

LOCATELLO = REPO / "configs/studies/locatello_mini.yaml"


def write(tmp_path: Path, data: dict | str, name: str = "study.yaml") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return str(path)


def tiny_study(name: str = "tiny", seeds=(0, 1), entry: str = "beta") -> dict:
    base = str(REPO / "configs/base.yaml")
    return {
        "name": name,
        "seeds": list(seeds),
        "args": TINY_NETS,
        "entries": [
            {
                "name": entry,
                "config": [base],
                "grid": {"model.init_args.beta": [1, 4]},
                "args": ["--model", "vae_lightning.BetaVAE"],
            },
            {"name": "tc", "config": [base, str(REPO / "configs/sprites/beta_tcvae.yaml")]},
        ],
    }


# ---- the file ----------------------------------------------------------------------------------


def test_the_shipped_study_has_six_objectives_each_with_its_own_stack_grid_and_two_seeds(monkeypatch):
    monkeypatch.chdir(REPO)  # its config paths are relative to the repository, like --config
    spec = study_file.load(str(LOCATELLO))
    assert [e.name for e in spec.entries] == [
        "beta_vae",
        "annealed_vae",
        "factor_vae",
        "dip_vae_i",
        "dip_vae_ii",
        "beta_tcvae",
    ]
    tasks = study_file.tasks(spec)
    assert len(tasks) == 6 * 2 * 2 and len({t.label for t in tasks}) == 24
    for task in tasks:
        entry = next(e for e in spec.entries if e.name == task.entry)
        assert task.argv[: 2 * len(entry.configs)] == [a for c in entry.configs for a in ("--config", c)]
        assert task.argv[-4:] == ["--seed_everything", str(task.seed), "--data.init_args.seed", str(task.seed)]
        assert [k for k, _ in task.point] == [k for k, _ in entry.grid]


def test_each_entry_resolves_its_own_class_and_settings_and_the_seed_sets_the_data_order(monkeypatch):
    monkeypatch.chdir(REPO)
    spec = study_file.load(str(LOCATELLO))
    first = {}
    for task in study_file.tasks(spec):
        if task.entry not in first or (task.entry == "beta_tcvae" and task.seed == 1):
            first[task.entry if task.seed == 0 else "beta_tcvae seed 1"] = (task, resolve(task.argv))
    classes = {name: config["model"]["class_path"] for name, (_, config) in first.items()}
    assert classes["beta_vae"] == classes["annealed_vae"] == "vae_lightning.BetaVAE"
    assert classes["factor_vae"] == "vae_lightning.FactorVAE" and classes["beta_tcvae"] == "vae_lightning.BetaTCVAE"
    tc = first["beta_tcvae"][1]["model"]["init_args"]
    assert tc["estimator"] == "mss" and tc["beta"] == 2.0  # its own config and its own grid, nothing carried over
    assert first["annealed_vae"][1]["model"]["init_args"]["c_steps"] == 300  # the entry's own args
    assert first["dip_vae_ii"][1]["model"]["init_args"]["kind"] == "ii"
    for _, (task, config) in first.items():
        assert config["seed_everything"] == task.seed == config["data"]["init_args"]["seed"]
        assert config["data"]["init_args"]["split_seed"] == 0  # the test set does not follow the seed
        assert config["trainer"]["max_steps"] == 300
    hashes = [task_hash(config) for _, config in first.values()]
    assert len(set(hashes)) == len(hashes)


@pytest.mark.parametrize("path", sorted((REPO / "configs/studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_file_loads_and_its_first_task_of_each_entry_resolves(path, monkeypatch):
    monkeypatch.chdir(REPO)
    spec = study_file.load(str(path))
    seen = set()
    for task in study_file.tasks(spec):
        if task.entry not in seen:
            seen.add(task.entry)
            assert resolve(task.argv)["seed_everything"] == task.seed
    assert seen == {e.name for e in spec.entries}


BAD = [
    ("name: [x\n", "is not valid YAML"),
    ("- a\n- b\n", "must be a mapping"),
    ({"name": "s", "entries": [], "extra": 1}, "key 'extra' is not a study key"),
    ({"name": "a/b", "entries": [{"name": "e", "config": ["{base}"]}]}, "cannot be a folder name"),
    ({"name": "..", "entries": [{"name": "e", "config": ["{base}"]}]}, "cannot be a folder name"),
    ({"name": "s", "seeds": [0, 0], "entries": [{"name": "e", "config": ["{base}"]}]}, "repeats a seed"),
    ({"name": "s", "seeds": ["a"], "entries": [{"name": "e", "config": ["{base}"]}]}, "list of integers"),
    ({"name": "s", "seeds": [-1], "entries": [{"name": "e", "config": ["{base}"]}]}, "from 0 to 2\\*\\*32 - 1"),
    ({"name": "s", "entries": []}, "entries must be a non-empty list"),
    ({"name": "s", "entries": [{"name": "e", "config": ["missing.yaml"]}]}, "which is not a file"),
    ({"name": "s", "entries": [{"name": "e/f", "config": ["{base}"]}]}, "cannot be a folder name"),
    ({"name": "s", "entries": [{"name": "e", "config": ["{base}"], "grid": [1]}]}, "must map config keys"),
    ({"name": "s", "entries": [{"name": "e", "config": ["{base}"], "grid": {"k": []}}]}, "non-empty list"),
    ({"name": "s", "entries": [{"name": "e", "config": ["{base}"], "grid": {"seed_everything": [1]}}]}, "`seeds:`"),
    ({"name": "s", "entries": [{"name": "e", "config": ["{base}"], "grid": {"model.x": [".."]}}]}, "folder name"),
    ({"name": "s", "entries": [{"name": "e", "config": ["{base}"], "grid": {"model.x": [1, 1]}}]}, "repeats"),
    ({"name": "s", "entries": [{"name": "e", "config": ["{base}"], "grid": {"a;b": [1]}}]}, "KEY=V1,V2"),
    ({"name": "s", "entries": [{"name": "e", "config": ["{base}"], "args": "--x"}]}, "list of arguments"),
    ({"name": "s", "entries": [{"name": "e", "config": ["{base}"]}, {"name": "e", "config": ["{base}"]}]}, "twice"),
]


@pytest.mark.parametrize("data, words", BAD)
def test_a_bad_study_file_is_refused_in_one_line(tmp_path, data, words):
    base = str(REPO / "configs/base.yaml")
    text = data if isinstance(data, str) else yaml.safe_dump(data).replace("'{base}'", base).replace("{base}", base)
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=words) as err:
        study_file.load(path)
    assert len(str(err.value).splitlines()) == 1 and path in str(err.value)


# ---- a task's identity -----------------------------------------------------------------------


def test_the_identity_ignores_where_a_run_writes_and_follows_every_setting():
    base = ["--config", str(REPO / "configs/base.yaml"), *TINY_NETS]
    a = resolve([*base, "--trainer.default_root_dir", "runs/a", "--trainer.logger.init_args.name", "x"])
    b = resolve([*base, "--trainer.default_root_dir", "runs/b", "--trainer.enable_progress_bar", "false"])
    c = resolve([*base, "--trainer.max_steps", "7"])
    assert task_hash(a) == task_hash(b) != task_hash(c)
    assert first_difference(identity(a), identity(c)) == "trainer.max_steps"
    assert first_difference({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}) == "a.c"


def test_a_misspelled_grid_key_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tiny_study()
    data["entries"][0]["grid"] = {"model.init_args.latnet_dim": [4, 8]}
    path = write(tmp_path, data)
    before = tree(tmp_path)
    with pytest.raises(UserError, match="latnet_dim"):
        study_command.plan(study_file.load(path), [], tmp_path / "runs/tiny")
    assert tree(tmp_path) == before


def test_a_task_folder_that_holds_another_config_is_refused_naming_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, tiny_study(seeds=[0]))
    planned = study_command.plan(study_file.load(path), [], tmp_path / "runs/tiny")
    assert len(planned) == 3 and len({p.folder for p in planned}) == 3
    assert planned[0].folder.name == f"beta,beta=1,seed=0-{planned[0].hash}"
    changed = json.loads(json.dumps(planned[1].identity))
    changed["model"]["init_args"]["latent_dim"] = 9
    planned[1].folder.mkdir(parents=True)
    (planned[1].folder / study_command.TASK_FILE).write_text(json.dumps({"identity": changed}))
    before = tree(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["study", "run", path])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
    assert "differs at model.init_args.latent_dim" in err and planned[1].folder.name in err
    assert tree(tmp_path) == before  # refused: untouched


def test_submit_takes_the_folder_its_own_job_wrote_and_names_a_changed_job_shape(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, tiny_study(seeds=[0]))
    planned = study_command.plan(study_file.load(path), [], tmp_path / "runs/tiny")
    # what a CPU job of `vae study submit` saves: the config plus the job script's trainer keys
    saved = json.loads(json.dumps(planned[0].identity))
    saved["trainer"].update(accelerator="cpu", devices="1", num_nodes=1)
    run = planned[0].folder / "checkpoints/slurm-7_0"
    run.mkdir(parents=True)
    (run / "vae_config.yaml").write_text(yaml.safe_dump(saved))
    main(["study", "submit", path, "--gpus-per-node", "0", "--dry-run"])
    assert "task 0: beta model.init_args.beta=1 seed=0" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["study", "submit", path, "--gpus-per-node", "0", "--ntasks-per-node", "2", "--dry-run"])
    assert exit_.value.code == 2 and "differs at trainer.devices" in capsys.readouterr().err


# ---- submit --dry-run --------------------------------------------------------------------------


def test_dry_run_lists_every_task_and_prints_one_array_that_runs_each_stack(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, tiny_study(entry="$(touch pwned)"))
    before = tree(tmp_path)
    main(["study", "submit", path, "--gpus-per-node", "0", "--test", "--dry-run", "--", "--trainer.max_steps", "5"])
    out = capsys.readouterr().out
    assert tree(tmp_path) == before  # a dry run writes nothing
    listed = [line for line in out.splitlines() if line.startswith("task ")]
    assert len(listed) == 6
    assert listed[0].startswith(
        "task 0: $(touch pwned) model.init_args.beta=1 seed=0 -> runs/tiny/$(touch pwned),beta=1,seed=0-"
    )
    assert listed[4].startswith("task 4: tc - seed=0 -> runs/tiny/tc,seed=0-")
    script = out[out.index("#!/bin/bash") :]
    assert "#SBATCH --array=0-5\n" in script and "#SBATCH --output=runs/tiny/slurm-%x-%A_%a.out\n" in script
    assert "pwned" not in unquoted(script)
    cases = script.split("\n    ;;\n")
    assert len(cases) == 7
    assert "--model vae_lightning.BetaVAE" in cases[0] and "--model.init_args.beta 1" in cases[0]
    assert "beta_tcvae.yaml" in cases[4] and "BetaVAE" not in cases[4] and "model.init_args.beta " not in cases[4]
    for i, case in enumerate(cases[:6]):
        folder = listed[i].split(" -> ")[1]
        assert f"    ROOT='{folder}'\n" in case or f"    ROOT={folder}\n" in case
        # the arguments after -- come before the grid point and the seed
        assert case.index("--trainer.max_steps 5") < case.index("--seed_everything")
        assert f"--data.init_args.seed {i % 2}" in case
    # fit and test in one process per task
    assert script.endswith(' study task --root "$ROOT" --test -- "${ARGS[@]}"\n')


def test_slurm_submit_seeds_set_the_data_seed_too(tmp_path):
    from vae_lightning.cli.slurm import job_from_args, render

    job, _ = job_from_args(["--config", str(REPO / "configs/base.yaml"), "--gpus-per-node", "0", "--seeds", "0,1"])
    script = render(job)
    assert '--seed_everything "${V0[$I]}"\n    --data.init_args.seed "${V0[$I]}"\n' in script


# ---- status ------------------------------------------------------------------------------------


def _fabricated_study(root: Path) -> list[dict]:
    tasks = []
    for n, (entry, state) in enumerate(
        [("beta", "finished"), ("beta", "failed"), ("tc", "running"), ("tc", "preempted"), ("tc", "missing")]
    ):
        folder = f"{entry},seed={n}-h{n}"
        tasks.append(
            {"entry": entry, "point": {"model.init_args.beta": "4"}, "seed": n, "hash": f"h{n}", "folder": folder}
        )
        if state == "missing":
            continue
        run = root / folder / "checkpoints/version_0"
        run.mkdir(parents=True)
        (root / folder / study_command.STARTS_FILE).write_text("100.0\n" + ("150.0\n" if state == "preempted" else ""))
        status = {"finished": "finished", "failed": "failed", "running": "running", "preempted": "running"}[state]
        (run / "summary.json").write_text(json.dumps({"status": status, "step": 10 * n}))
        if state == "finished":
            (root / folder / "fit.done").write_text("0")
            (root / folder / study_command.FINISHED_FILE).write_text("142.5\n")
        if state == "preempted":  # SLURM's checkpoint after the fit's last record
            (root / folder / "hpc_ckpt_1.ckpt").write_text("")
            os.utime(root / folder / "hpc_ckpt_1.ckpt", (2e9, 2e9))
    command = ["vae", "study", "submit", "s.yaml", "--only", "x", "--dry-run", "--", "--trainer.max_steps", "5"]
    (root / study_command.STUDY_FILE).write_text(json.dumps({"name": "s", "command": command, "tasks": tasks}))
    return tasks


def test_status_prints_one_line_per_task_and_the_command_for_the_unfinished(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(study_status.shutil, "which", lambda name: None)  # no SLURM: the folders alone
    _fabricated_study(tmp_path)
    main(["study", "status", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["entry", "point", "seed", "state", "steps", "restarts", "wall_time_s", "hash"]
    rows = [line.split() for line in lines[1:6]]
    assert [r[3] for r in rows] == ["finished", "failed", "running", "preempted", "missing"]
    assert rows[0] == ["beta", "beta=4", "0", "finished", "0", "0", "42", "h0"]  # 142.5 - 100: start to end
    assert rows[3][5] == "1" and rows[4][4:] == ["h4"]  # one restart; nothing known of a missing task
    assert lines[6] == "5 tasks: 1 finished, 1 failed, 1 running, 1 preempted, 1 missing"
    assert lines[-1].strip() == "vae study submit s.yaml --only h1,h3,h4 -- --trainer.max_steps 5"


def test_status_of_a_folder_without_a_study_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["study", "status", str(tmp_path)])
    assert "has no study.json" in capsys.readouterr().err


def test_status_of_a_one_task_study_says_task(tmp_path, capsys):
    task = {"entry": "beta", "point": {}, "seed": 0, "hash": "h0", "folder": "beta,seed=0-h0"}
    command = ["vae", "study", "run", "s.yaml"]
    (tmp_path / study_command.STUDY_FILE).write_text(json.dumps({"name": "s", "command": command, "tasks": [task]}))
    study_status.main([str(tmp_path)])
    assert "\n1 task: 1 missing\n" in capsys.readouterr().out
