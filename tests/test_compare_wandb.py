"""`vae compare --wandb ENTITY/PROJECT --study NAME` builds the report of `vae compare --study DIR`
(issue 24 item 7): one fabricated study (3 entries x 2 values of each one's own hyper-parameter x 2
seeds), written as task folders and as recorded W&B API responses (``fixtures/wandb_study.json``:
the attributes of ``wandb.apis.public.Run`` for such runs, written once by a one-off script in the
form the API documents, with W&B's own keys: ``_wandb``, ``_runtime``, ``provenance_test``, the
logger's ids, a table reference, the global step 0 a test leaves; no network here), gives equal runs
and groups tables. ``test_study_run`` checks the same against a real study's offline W&B runs."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from fabricated_study import ENTRIES, METRICS, RecordedRun, write_task

from vae_lightning.cli import main as vae_main
from vae_lightning.cli.compare import tables
from vae_lightning.evaluation import compare as c
from vae_lightning.evaluation import compare_table as t
from vae_lightning.evaluation import compare_wandb

STUDY, SEEDS = "mini", (0, 1)
FIXTURE = Path(__file__).parent / "fixtures" / "wandb_study.json"


def metric_value(entry: str, v: int, seed: int, i: int) -> float:
    """Metric ``i`` of a task: the model, the grid value (index ``v``) and the seed each shift it
    (binary fractions: the same float in a folder's JSON and in W&B's)."""
    shift = {"beta_vae": 0.0, "beta_tcvae": 5.0, "factor_vae": -3.0}[entry]
    return float(100 * (i + 1) + shift * (i + 1) + 2 * v + 0.25 * seed * (i + 1) + 0.125 * v * seed)


def task_hash(entry: str, value, seed: int) -> str:
    return f"{len(entry):04d}{value:04d}{seed:02d}"  # as fabricated_study.write_task names the folder


class RecordedApi:
    def __init__(self):
        self._runs = [RecordedRun(r) for r in json.loads(FIXTURE.read_text())["runs"]]

    def runs(self, path, filters=None):
        return [r for r in self._runs if r.group == (filters or {}).get("group")]


@pytest.fixture
def folders(tmp_path) -> Path:
    study = tmp_path / STUDY
    for entry, (_, _, _, values) in ENTRIES.items():
        for v, value in enumerate(values):
            for seed in SEEDS:
                metrics = {m: metric_value(entry, v, seed, i) for i, m in enumerate(METRICS)}
                write_task(study, entry, value, seed, metrics, restarts=int(entry == "factor_vae" and seed == 1))
    return study


def report_tables(runs: list[c.Run]) -> tuple[t.Table, t.Table]:
    """The runs and groups tables of `vae compare` at its default options."""
    kept, skipped = c.select(runs, c.default_metrics(runs))
    assert not skipped and len(kept) == 12
    c.flag_provenance(kept)
    _, runs_t, _, groups_t = tables(kept, c.default_metrics(kept), None)
    return runs_t, groups_t


def test_the_wandb_runs_of_a_study_give_the_folders_tables(folders):
    from_folders = report_tables(c.find_runs([], str(folders))[0])
    api = RecordedApi()
    from_wandb = report_tables(compare_wandb.runs_from_wandb("team/vae", STUDY, api=api))
    for ours, theirs in zip(from_wandb, from_folders, strict=True):
        assert ours.columns == theirs.columns
        assert ours.rows == theirs.rows
    runs_t, groups_t = from_wandb
    assert {"entry", "BetaVAE.beta", "FactorVAE.gamma", "restarts", "wall_time_s", "test/mig"} <= set(runs_t.columns)
    assert not any(col.startswith(("provenance", "study_task", "trainer.logger")) for col in runs_t.columns)
    rows = [dict(zip(runs_t.columns, row, strict=True)) for row in runs_t.rows]
    assert sorted(r["restarts"] for r in rows) == [0] * 10 + [1, 1] and {r["wall_time_s"] for r in rows} == {109.5}
    assert [row[:3] for row in groups_t.rows] == [
        ["beta_tcvae", "beta=2", 2],
        ["beta_tcvae", "beta=6", 2],
        ["beta_vae", "beta=1", 2],
        ["beta_vae", "beta=4", 2],
        ["factor_vae", "gamma=10", 2],
        ["factor_vae", "gamma=40", 2],
    ]
    for run in api.runs("team/vae", {"group": STUDY}):  # what W&B groups the runs by
        assert run.job_type == run.config["study_task"]["entry"] and run.group == STUDY


def test_the_command_prints_the_same_tables_from_wandb_as_from_the_folders(folders, monkeypatch, capsys):
    def printed(argv: list[str]) -> list[str]:
        vae_main(["compare", *argv])
        return [line for line in capsys.readouterr().out.splitlines() if not line.startswith("note:")]

    from_folders = printed(["--study", str(folders)])
    recorded = functools.partial(compare_wandb.runs_from_wandb, api=RecordedApi())
    monkeypatch.setattr(compare_wandb, "runs_from_wandb", recorded)
    assert printed(["--wandb", "team/vae", "--study", STUDY]) == from_folders
    assert printed(["--wandb", "team/vae", "--group", STUDY]) == from_folders  # the older spelling
    assert from_folders[0] == "12 runs" and "6 groups (mean ± sd over runs, n)" in from_folders
