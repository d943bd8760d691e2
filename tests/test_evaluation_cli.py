"""End to end through `vae`: a short sprites β-VAE run, then `vae test`, the picture commands,
`vae predict`, and the bad inputs of the evaluation commands."""

import csv
import os
import re
import signal
import subprocess
import time

import pytest
import torch
from PIL import Image

from helpers import REPO, run_vae, vae_command

TINY = [
    "--config",
    "configs/base.yaml",
    "--config",
    "configs/sprites/vae.yaml",
    "--config",
    "configs/sprites/beta_vae.yaml",
    "--model.init_args.encoder",
    "vae_lightning.MLPEncoder",
    "--model.init_args.decoder",
    "vae_lightning.MLPDecoder",
    "--data.init_args.num_images",
    "2000",
    "--data.init_args.val_size",
    "256",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sprites-beta")
    r = run_vae(
        "fit",
        *TINY,
        "--trainer.max_steps",
        "60",
        "--trainer.val_check_interval",
        "30",
        "--trainer.default_root_dir",
        str(root),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def metrics_table(stdout: str) -> dict[str, float]:
    # Lightning prints a rich table (│ between columns) when rich is installed, else plain columns
    return {k: float(v) for k, v in re.findall(r"test/(\w+)\s*[│|]?\s+([-+\d.e]+)", stdout)}


def test_fit_logs_all_pictures_to_png_and_to_the_offline_wandb_run(run):
    names = {p.name.split("_step")[0] for p in (run / "images" / "version_0").glob("*.png")}
    assert names == {"reconstructions", "samples", "traversals", "interpolations", "kl_per_dim"}
    media = {p.name.split("_")[0] for p in run.glob("wandb/offline-run-*/files/media/images/**/*.png")}
    assert {"reconstructions", "samples", "traversals", "interpolations", "kl"} <= media


def test_vae_test_prints_the_likelihood_latent_and_disentanglement_metrics(run):
    args = [*TINY, "--trainer.default_root_dir", str(run), "--ckpt_path", str(run / "checkpoints/version_0/last.ckpt")]
    r = run_vae(
        "test",
        *args,
        "--model.init_args.iw_samples",
        "20",
        "--disentanglement.num_points",
        "2000",
        "--disentanglement.factor_vae_train",
        "100",
        "--disentanglement.factor_vae_eval",
        "100",
        # the new metrics at tiny sizes: DCI's cost is trees × 113 factor values, whatever the points
        *("--disentanglement.num_train", "200", "--disentanglement.num_test", "100"),
        *("--disentanglement.dci_trees", "5"),
        *("--disentanglement.beta_vae_train", "100", "--disentanglement.beta_vae_eval", "50"),
        *("--disentanglement.beta_vae_batch", "16"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    m = metrics_table(r.stdout)
    assert {"nll_iw", "bpd", "active_units", "mi", "mig", "factor_vae", "elbo", "recon", "kl"} <= set(m), r.stdout
    disentanglement = {"dci_disentanglement", "dci_completeness", "dci_informativeness", "sap", "modularity"}
    disentanglement |= {"explicitness", "beta_vae"}
    assert disentanglement <= set(m), r.stdout
    assert all(0 <= m[k] <= 1 for k in disentanglement), {k: m[k] for k in disentanglement}
    assert "test/kl_dim/9" in r.stdout
    out = r.stdout + r.stderr  # a line before and after each metric, some take minutes at the defaults
    assert "vae test: DCI (5 boosting rounds per factor, the slowest metric) ..." in out, out[-3000:]
    assert re.search(r"vae test: the BetaVAE score: \d+ s", out), out[-3000:]
    assert m["nll_iw"] <= -m["elbo"]  # the IW bound is never worse than the ELBO
    assert m["bpd"] == pytest.approx(m["nll_iw"] / (64 * 64 * 0.6931471805599453), rel=1e-4)
    assert 0 <= m["active_units"] <= 10 and 0 <= m["mig"] <= 1 and 0 <= m["factor_vae"] <= 1
    # k given at test time wins over the checkpoint's; k = 1 is the ELBO, so larger k is tighter
    r = run_vae("test", *args, "--model.init_args.iw_samples", "1", "--disentanglement.enabled", "false")
    one = metrics_table(r.stdout)
    assert r.returncode == 0 and "mig" not in one, r.stderr[-3000:]
    assert m["nll_iw"] < one["nll_iw"]  # with the checkpoint's k both runs would give the same value


def test_sigterm_during_dci_stops_within_seconds_and_writes_nothing(run):
    """SIGTERM while DCI fits its trees: vae test ends within 10 s, non-zero, with one line
    naming DCI, no metric printed or logged, and the run folder byte for byte as it was (with no
    logger the test has no folder of its own, so it must not write its config over the fit's)."""
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "wandb" not in p.parts}
    cmd = [*vae_command(), "test", *TINY, "--trainer.default_root_dir", str(run)]
    cmd += ["--ckpt_path", str(run / "checkpoints/version_0/last.ckpt"), "--model.init_args.iw_samples", "2"]
    cmd += ["--trainer.limit_test_batches", "1", "--trainer.logger", "false", "--disentanglement.metrics", "[dci]"]
    cmd += ["--disentanglement.num_train", "5000", "--disentanglement.num_test", "100"]  # minutes of fits
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # until DCI starts
        lines.append(line)
        if line.startswith("vae test: DCI"):
            break
    assert lines and lines[-1].startswith("vae test: DCI"), "".join(lines[-30:])
    time.sleep(2)  # inside the first factor's boosting rounds
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    rest = proc.communicate(timeout=60)[0]
    assert time.monotonic() - sent < 10, rest
    assert proc.returncode == 128 + signal.SIGTERM, rest
    assert rest.strip().splitlines()[-1] == "vae test: SIGTERM during DCI; no metric was logged.", rest
    assert "test/dci" not in rest and "test/elbo" not in rest, rest
    now = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "wandb" not in p.parts}
    assert set(now) == set(files)  # no new file
    changed = [str(p.relative_to(run)) for p in files if now[p] != files[p]]
    assert not changed, changed  # vae_config.yaml beside the checkpoint above all: evaluations read it
    assert any(p.name in ("summary.json", "history.csv") for p in files)


def test_picture_commands_write_the_grids_they_promise(run, tmp_path):
    ckpt = str(run / "checkpoints/version_0/last.ckpt")
    r = run_vae("sample", ckpt, "--num", "16", "--nrow", "8", "--out", str(tmp_path / "s.png"))
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "s.png").size == (2 + 8 * 66, 2 + 2 * 66)  # 8 × 2 images of 64 px, 2 px padding
    Image.fromarray((torch.rand(64, 64) > 0.5).numpy().astype("uint8") * 255).save(tmp_path / "a.png")
    r = run_vae(
        "traverse",
        ckpt,
        "--image",
        str(tmp_path / "a.png"),
        "--dims",
        "4",
        "--steps",
        "5",
        "--out",
        str(tmp_path / "t.png"),
    )
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "t.png").size == (2 + 5 * 66, 2 + 4 * 66)
    r = run_vae("interpolate", ckpt, "--rows", "3", "--steps", "6", "--out", str(tmp_path / "i.png"))
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "i.png").size == (2 + 6 * 66, 2 + 3 * 66)


def test_predict_writes_one_row_of_anomaly_scores_per_input(run, tmp_path):
    out = tmp_path / "scores.csv"
    r = run_vae(
        "predict",
        *TINY,
        "--trainer.default_root_dir",
        str(run),
        "--ckpt_path",
        str(run / "checkpoints/version_0/last.ckpt"),
        "--model.init_args.iw_samples",
        "5",
        "--scores.path",
        str(out),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 256 and [r["index"] for r in rows[:3]] == ["0", "1", "2"]
    assert {"shape", "pos_x", "neg_elbo", "nll_iw", "recon", "kl", "sq_error", "log_pz"} <= set(rows[0])
    nll, neg_elbo = (sum(float(r[k]) for r in rows) / len(rows) for k in ("nll_iw", "neg_elbo"))
    assert nll < neg_elbo  # both are single noisy estimates per row; on average the IW bound is tighter
    assert not list(tmp_path.glob(".*tmp"))


def _one_line_error(r, *words):
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("vae: error: "), r.stderr[-2000:]
    for word in words:
        assert word in lines[-1]


def test_bad_checkpoints_get_one_sentence_and_no_output(run, tmp_path):
    out = tmp_path / "s.png"
    _one_line_error(run_vae("sample", str(tmp_path / "nope.ckpt"), "--out", str(out)), "does not exist")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((run / "checkpoints/version_0/last.ckpt").read_bytes()[:5000])
    _one_line_error(run_vae("traverse", str(truncated), "--out", str(out)), "truncated")
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "torch.nn.Linear"}}, other)
    _one_line_error(run_vae("interpolate", str(other), "--out", str(out)), "not a vae_lightning VAE")
    scores = tmp_path / "scores.csv"
    _one_line_error(
        run_vae(
            "predict",
            *TINY,
            "--trainer.default_root_dir",
            str(tmp_path),
            "--ckpt_path",
            str(truncated),
            "--scores.path",
            str(scores),
        ),
        "truncated",
    )
    assert not list(tmp_path.glob("*.png")) and not scores.exists() and not list(tmp_path.glob(".*"))


def test_bad_evaluation_settings_get_one_sentence(run, mnist_dir, tmp_path):
    _one_line_error(
        run_vae("test", *TINY, "--trainer.default_root_dir", str(tmp_path), "--model.init_args.iw_samples", "0"),
        "iw_samples",
    )
    _one_line_error(
        run_vae(
            "test",
            "--config",
            "configs/base.yaml",
            "--config",
            "configs/mnist/vae.yaml",
            "--data.init_args.data_dir",
            str(mnist_dir),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--disentanglement.enabled",
            "true",
        ),
        "ground-truth factors",
    )
    _one_line_error(
        run_vae("test", *TINY, "--trainer.default_root_dir", str(tmp_path), "--disentanglement.metrics", "[mig,dci2]"),
        "disentanglement.metrics",
        "'dci2'",
    )
