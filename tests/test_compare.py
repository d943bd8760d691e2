"""`vae compare` over synthetic study folders written with the run-record writers: the table, the
grouping (mean ± sd against numpy), differing keys, bad inputs, figures, HTML, provenance flags,
and the conversion of W&B API objects (a stand-in for wandb.Api: W&B is not reachable here)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from vae_lightning.cli import main as vae_main
from vae_lightning.evaluation import compare as c
from vae_lightning.evaluation import compare_table as t
from vae_lightning.evaluation.compare_wandb import convert, runs_from_wandb
from vae_lightning.runtime.records import write_history, write_summary

METRICS = ("test/nll_iw", "test/elbo", "test/kl", "test/recon", "test/active_units")


def make_run(
    study: Path,
    beta: float,
    seed: int,
    rng: np.random.Generator,
    status: str = "finished",
    metrics=METRICS,
    provenance: dict | None = None,
    version: str = "version_0",
) -> Path:
    """A task folder as `vae slurm submit --study` lays it out, with random but real-format records."""
    root = study / f"model.init_args.beta={beta:g},seed_everything={seed}"
    folder = root / "checkpoints" / version
    folder.mkdir(parents=True)
    config = {
        "seed_everything": seed,
        "trainer": {
            "default_root_dir": str(root),
            "max_steps": 100,
            "logger": {"class_path": "WandbLogger", "init_args": {"name": f"b{beta}s{seed}", "tags": []}},
        },
        "model": {"class_path": "vae_lightning.BetaVAE", "init_args": {"beta": beta, "latent_dim": 6}},
        "checkpoint": {"dirpath": str(folder)},
    }
    (folder / "vae_config.yaml").write_text(yaml.safe_dump(config))
    rows = [
        {"step": s, "wall_time": s / 10, "train/loss": 500.0 - s, "val/elbo": -400 + s + rng.normal()}
        for s in (25, 50, 75, 100)
    ]
    write_history(folder, rows)
    summary = {"status": status, "step": 100, "wall_time": 10.0, **{m: float(rng.normal(-100, 5)) for m in metrics}}
    write_summary(folder, summary)
    if provenance is not None:
        (folder / "provenance.json").write_text(json.dumps(provenance))
    return folder


def provenance(code: str = "v0.1-3-gabc") -> dict:
    return {
        "config_hash": "x",
        "code_version": code,
        "versions": {"torch": "2.14.1"},
        "data": {"class": "SpritesDataModule", "checksum_or_version": "sprites-1", "split_seed": 0, "binarize": None},
    }


@pytest.fixture
def study(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for beta in (1, 4):
        for seed in (0, 1, 2):
            make_run(tmp_path / "betas", beta, seed, rng, provenance=provenance())
    return tmp_path / "betas"


def read_csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_table_and_grouped_mean_sd_match_numpy(study, tmp_path, capsys):
    out = tmp_path / "out"
    vae_main(["compare", "--study", str(study), "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed.startswith("6 runs") and "2 groups" in printed
    runs = read_csv(out / "runs.csv")
    assert len(runs) == 6 and set(runs[0]) >= {
        "run",
        "beta",
        "seed_everything",
        *METRICS,
        "steps",
        "restarts",
        "wall_time_s",
    }
    groups = read_csv(out / "groups.csv")
    assert [g["beta"] for g in groups] == ["1", "4"] and [g["n"] for g in groups] == ["3", "3"]
    summaries = {
        p.parent.parent.parent.name: json.loads(p.read_text()) for p in study.glob("*/checkpoints/*/summary.json")
    }
    for group in groups:
        for metric in METRICS:
            xs = np.array(
                [
                    s[metric]
                    for name, s in summaries.items()
                    if name.startswith(f"model.init_args.beta={group['beta']},")
                ]
            )
            assert float(group[f"{metric}_mean"]) == pytest.approx(xs.mean(), rel=1e-12)
            assert float(group[f"{metric}_sd"]) == pytest.approx(xs.std(ddof=1), rel=1e-12)
    assert "| beta | n |" in (out / "compare.md").read_text()  # the grouped Markdown table


def test_differing_keys_leave_out_paths_and_logger_names(study):
    runs, notes = c.find_runs([], str(study))
    assert notes == [] and len(runs) == 6
    keys = c.differing_keys(runs)
    assert keys == ["model.init_args.beta", "seed_everything"]  # not default_root_dir, dirpath, logger name
    assert [k for k in keys if not c.is_seed_key(k)] == ["model.init_args.beta"]
    assert c.resolve_keys(["beta"], runs) == ["model.init_args.beta"]
    with pytest.raises(c.UserError, match="--group-by 'gamma'"):
        c.resolve_keys(["gamma"], runs)


def test_bad_inputs_get_one_line_each_and_the_rest_is_compared(tmp_path, capsys):
    rng = np.random.default_rng(1)
    study = tmp_path / "s"
    for seed in (0, 1):
        make_run(study, 1, seed, rng)
    make_run(study, 4, 0, rng, status="running")
    make_run(study, 4, 1, rng, metrics=METRICS[:2])  # fit, never tested
    make_run(study, 8, 0, rng, status="failed")
    (study / "slurm-logs").mkdir()
    for waiting in ("e,beta=2,seed=0-0123456789", "e,beta=2,seed=1-abcdef0123"):  # study tasks not started yet
        (study / waiting).mkdir()
        (study / waiting / "task.json").write_text("{}")
    vae_main(["compare", "--study", str(study)])
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert out.startswith("2 runs")
    assert len([n for n in notes if "beta=4,seed_everything=0" in n and "in progress" in n]) == 1
    assert len([n for n in notes if "beta=4,seed_everything=1" in n and "missing test/kl" in n]) == 1
    assert len([n for n in notes if "beta=8,seed_everything=0" in n and "failed" in n]) == 1
    assert len([n for n in notes if "slurm-logs: not a run folder" in n]) == 1
    assert len([n for n in notes if "2 study task(s) not started yet" in n and "seed=1-abcdef0123" in n]) == 1
    assert not [n for n in notes if "seed=0-0123456789: not a run folder" in n]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["compare"], "give run folders"),
        (["compare", "--study", "/nonexistent/study"], "--study '/nonexistent/study'"),
        (["compare", "--bogus"], "unrecognized arguments"),
        (["compare", "x", "--html"], "--html writes"),
        (["compare", "--wandb", "team/proj"], "--wandb needs --study NAME"),
        (["compare", "--study", "runs/x", "--group", "x"], "--group names a W&B group and needs --wandb"),
        (["compare", "--wandb", "team/proj", "--study", "a", "--group", "b"], "name the same thing"),
    ],
)
def test_command_line_mistakes_are_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        vae_main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and needle in err and len(err.splitlines()) == 1


def test_figures_and_html_report_are_written(study, tmp_path):
    out = tmp_path / "report"
    vae_main(["compare", "--study", str(study), "--out", str(out), "--html"])
    figures = [
        "metrics_by_group",
        "metrics_vs_beta",
        "variance_shares",
        "spearman",
        "learning_curves",
        "rate_distortion",
    ]
    for name in figures:
        data = (out / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    page = (out / "report.html").read_text()
    # the tables: groups (2), variance shares (one row per metric), runs (6), each with its header
    assert page.count("data:image/png;base64,") == 6 and page.count("<tr>") == 1 + 2 + 1 + 5 + 1 + 6
    assert "metrics_vs_beta" in (out / "compare.md").read_text()


def test_a_run_of_other_code_is_flagged(tmp_path, capsys):
    rng = np.random.default_rng(2)
    study = tmp_path / "s"
    make_run(study, 1, 0, rng, provenance=provenance())
    make_run(study, 1, 1, rng, provenance=provenance())
    make_run(study, 4, 0, rng, provenance=provenance("v0.2"))
    make_run(study, 4, 1, rng)  # no provenance.json: unknown, not flagged
    vae_main(["compare", "--study", str(study), "--out", str(tmp_path / "o")])
    runs = {r["run"]: r["flags"] for r in read_csv(tmp_path / "o" / "runs.csv")}
    assert runs == {
        "model.init_args.beta=1,seed_everything=0": "",
        "model.init_args.beta=1,seed_everything=1": "",
        "model.init_args.beta=4,seed_everything=0": "code",
        "model.init_args.beta=4,seed_everything=1": "",
    }
    assert "1 of 4 runs have no provenance.json" in capsys.readouterr().out


@pytest.mark.slow
def test_compare_imports_neither_torch_nor_lightning():
    code = (
        "import sys, vae_lightning.cli.compare, vae_lightning.evaluation.compare_wandb; "
        "print(sorted(m for m in ('torch', 'lightning', 'wandb', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- W&B: the conversion from API objects, with a stand-in for wandb.Api ------------------------


class FakeRun:
    """The attributes of wandb.apis.public.Run that compare_wandb reads."""

    def __init__(self, run_id, beta, seed, state="finished"):
        self.id, self.name, self.state = run_id, f"beta={beta},seed={seed}", state
        self.config = {
            "_wandb": {},
            "seed_everything": seed,
            "model": {"init_args": {"beta": beta}},
            "provenance": provenance(),
        }
        self.summary = {
            "_runtime": 12.5,
            "_step": 7,
            "trainer/global_step": 100,
            "val/elbo": {"max": -90.0},
            **{m: float(beta * 10 + seed) for m in METRICS},
        }
        self.rows = [{"trainer/global_step": s, "val/elbo": -200.0 + s} for s in (50, 100)]

    def scan_history(self, keys=None):
        return [r for r in self.rows if all(k in r for k in keys)]


class FakeApi:
    def __init__(self, runs):
        self._runs, self.calls = runs, []

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        return [r for r in self._runs if filters is None or r.group == filters.get("group")]


def test_wandb_runs_convert_to_the_same_records():
    fakes = [FakeRun("a1", 1, 0), FakeRun("a2", 1, 1), FakeRun("b1", 4, 0, state="crashed")]
    for run in fakes:
        run.group = "betas"
    api = FakeApi(fakes)
    runs = runs_from_wandb("team/vae", "betas", api=api)
    assert api.calls == [("team/vae", {"group": "betas"})]
    first = runs[0]
    assert first.name == "beta=1,seed=0 (a1)" and first.status == "finished"
    assert first.config == {"seed_everything": 0, "model.init_args.beta": 1}
    assert first.summary["step"] == 100 and first.summary["wall_time"] == 12.5
    assert first.metric("val/elbo") == -90.0 and first.metric("test/kl") == 10.0
    assert first.history == [{"step": 50.0, "val/elbo": -150.0}, {"step": 100.0, "val/elbo": -100.0}]
    assert first.provenance["code_version"] == "v0.1-3-gabc"
    kept, notes = c.select(runs, list(METRICS))
    assert [r.name for r in kept] == ["beta=1,seed=0 (a1)", "beta=1,seed=1 (a2)"] and "failed" in notes[0]
    groups = t.group_runs(kept, ["model.init_args.beta"])
    assert [(g.values, len(g.runs)) for g in groups] == [((1,), 2)]
    assert convert(FakeRun("c", 2, 0, state="preempted")).status == "running"
    with pytest.raises(c.UserError, match="no runs in that W&B group"):
        runs_from_wandb("team/vae", "other", api=api)


def test_one_run_is_one_run_and_one_group(tmp_path, capsys):
    make_run(tmp_path / "s", 1, 0, np.random.default_rng(0))
    vae_main(["compare", "--study", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert out.startswith("1 run\n") and "\n1 group (mean ± sd over runs, n)\n" in out
