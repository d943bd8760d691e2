"""Run records: a tiny real fit through the `vae` CLI (no logger at all) writes history.csv and
summary.json beside its checkpoints; `vae test --ckpt_path X` adds test/* to X's summary; a fit
resumed from an earlier checkpoint drops the rows after it instead of repeating them."""

from __future__ import annotations

import json

import pytest

from helpers import TINY_MODEL
from vae_lightning.cli import run
from vae_lightning.runtime.records import read_history, read_summary

TINY = [
    *TINY_MODEL,
    "--data",
    "vae_lightning.data.SpritesDataModule",
    "--data.init_args.num_images",
    "240",
    "--data.init_args.val_size",
    "40",
    "--data.init_args.batch_size",
    "16",
    "--trainer.accelerator",
    "cpu",
    "--trainer.logger",
    "false",  # the records need no logger
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.val_check_interval",
    "10",
    "--trainer.check_val_every_n_epoch",
    "null",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.log_every_n_steps",
    "5",
    "--images.every_n_val",
    "0",
    "--checkpoint.save_top_k",
    "-1",  # keep best-10, best-20, ... to resume from
    "--model.init_args.iw_samples",
    "4",
    "--disentanglement.enabled",
    "false",  # MIG and FactorVAE take minutes; not what is tested here
]


@pytest.mark.slow  # three tiny runs in-process
def test_fit_test_and_resume_write_the_run_records(tmp_path):
    root = tmp_path / "run"
    run(["fit", *TINY, "--trainer.default_root_dir", str(root), "--trainer.max_steps", "20"])
    folder = root / "checkpoints" / "version_0"
    rows = read_history(folder)
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    assert all("train/loss" in r and "train/elbo" in r for r in rows)
    val = [r for r in rows if "val/elbo" in r]
    assert [int(r["step"]) for r in val] == [10, 20]  # every validation, sanity check left out
    times = [r["wall_time"] for r in rows]
    assert times == sorted(times) and times[0] >= 0
    summary = read_summary(folder)
    assert summary["status"] == "finished" and summary["step"] == 20
    assert summary["best/val/elbo"] == max(r["val/elbo"] for r in val)
    assert summary["best/val/loss"] == min(r["val/loss"] for r in val)
    assert summary["val/elbo"] == val[-1]["val/elbo"]
    assert (folder / "vae_config.yaml").is_file()
    assert not any(p.name.startswith(".") for p in folder.iterdir())  # no temporary file left

    run(["test", *TINY, "--trainer.default_root_dir", str(root), "--ckpt_path", str(folder / "best-10.ckpt")])
    summary = read_summary(folder)
    assert summary["evaluated/test"] == {"ckpt": "best-10.ckpt", "step": 10}
    for key in ("test/elbo", "test/kl", "test/recon", "test/nll_iw", "test/active_units"):
        assert isinstance(summary[key], float), key
    assert summary["status"] == "finished" and summary["step"] == 20  # the fit's own fields are kept
    run(["validate", *TINY, "--trainer.default_root_dir", str(root), "--ckpt_path", str(folder / "last.ckpt")])
    assert read_summary(folder)["evaluated/validate"] == {"ckpt": "last.ckpt", "step": 20}

    # resumed from step 10 (as a requeued job would be): rows 15 and 20 are written once more, not twice
    run(
        [
            "fit",
            *TINY,
            "--trainer.default_root_dir",
            str(root),
            "--trainer.max_steps",
            "25",
            "--ckpt_path",
            str(folder / "best-10.ckpt"),
        ]
    )
    rows = read_history(folder)
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20, 25]
    assert [r["wall_time"] for r in rows] == sorted(r["wall_time"] for r in rows)  # continues, not from 0
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == 25
    assert "test/elbo" in summary  # the earlier test numbers stay beside the fit's
