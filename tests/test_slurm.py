"""On a real SLURM cluster (`slurm/local-cluster.sh up`): `vae slurm submit` runs `vae fit`; a job
sent USR1 mid-epoch checkpoints, requeues itself, resumes and ends bitwise equal to a job that
was never interrupted, in the same W&B run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import IN_CI, REPO, TINY_MODEL, run_vae

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# 640 training images at batch 16: 40 steps an epoch; 80 steps in all
FIT = [
    *TINY_MODEL,
    "--data.init_args.num_images",
    "700",
    "--data.init_args.val_size",
    "60",
    "--data.init_args.batch_size",
    "16",
    "--trainer.max_steps",
    "80",
    "--trainer.val_check_interval",
    "20",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.deterministic",
    "true",
    "--trainer.enable_progress_bar",
    "false",
    "--images.every_n_val",
    "0",
]
ENV = {"PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _cluster_state() -> str:
    if shutil.which("sinfo") is None:
        return "sinfo is not installed"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    states = out.stdout.split()
    if out.returncode or not any(s.startswith(("idle", "mix", "alloc")) for s in states):
        return f"sinfo answered {out.stdout.strip() or out.stderr.strip()!r}"
    return ""


@pytest.fixture(scope="module")
def cluster():
    problem = _cluster_state()
    if problem:
        if IN_CI:
            pytest.fail(
                f"CI=true but no SLURM cluster answers ({problem}); .ci/run starts one with slurm/local-cluster.sh up"
            )
        pytest.skip(f"no SLURM cluster answers ({problem}); start one with `sudo slurm/local-cluster.sh up`")


def job_info(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_for(
    job: str, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"), timeout: float = 240
) -> dict[str, str]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        info = job_info(job)
        if info.get("JobState") in states:
            return info
        time.sleep(0.5)
    subprocess.run(["scancel", job])
    pytest.fail(f"job {job} did not finish in {timeout} s: {job_info(job)}")


def submit(tmp: Path, name: str, *extra: str, fit: list[str] = FIT, options: tuple[str, ...] = ()) -> str:
    """Submit a CPU job ``vae fit <fit> <extra>`` in ``tmp/<name>`` (``options``: for `vae slurm submit`)."""
    root = tmp / name
    result = run_vae(
        "slurm",
        "submit",
        "--config",
        str(REPO / "configs/base.yaml"),
        "--gpus-per-node",
        "0",
        *options,
        "--job-name",
        name,
        "--",
        *fit,
        "--trainer.default_root_dir",
        str(root),
        *extra,
        cwd=tmp,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr
    job = result.stdout.strip()
    assert job.isdigit(), result.stdout
    return job


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=False, map_location="cpu")["state_dict"]


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """An uninterrupted job and one sent USR1 mid-epoch, run side by side on the cluster."""
    tmp = tmp_path_factory.mktemp("slurm")
    progress = tmp / "progress"
    reference = submit(tmp, "reference")
    preempted = submit(
        tmp,
        "preempted",
        "--trainer.callbacks+=tests.probe.Progress",
        f"--trainer.callbacks.out={progress}",
        "--trainer.callbacks.delay=0.1",
    )
    end = time.monotonic() + 120
    while not (progress.exists() and progress.read_text().strip().isdigit() and int(progress.read_text()) >= 25):
        assert time.monotonic() < end, f"the job never reached step 25: {job_info(preempted)}"
        time.sleep(0.1)
    signalled_at = int(progress.read_text())
    subprocess.run(["scancel", "--signal=USR1", preempted], check=True)
    return tmp, reference, preempted, signalled_at, wait_for(reference), wait_for(preempted)


def test_submitted_fit_completes(runs):
    tmp, reference, _, _, info, _ = runs
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", info
    assert info["Restarts"] == "0"
    assert (
        torch.load(next((tmp / "reference/checkpoints").glob("slurm-*/last.ckpt")), weights_only=False)["global_step"]
        == 80
    )
    assert (tmp / f"slurm-reference-{reference}.out").exists()


def test_usr1_requeues_resumes_and_ends_bitwise_equal(runs):
    tmp, _, preempted, signalled_at, _, info = runs
    log = (tmp / f"slurm-preempted-{preempted}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, log[-3000:])
    assert info["Restarts"] == "1", info
    hpc = torch.load(tmp / "preempted/hpc_ckpt_1.ckpt", weights_only=False)
    assert signalled_at <= hpc["global_step"] < 80 and hpc["global_step"] % 40, hpc["global_step"]  # mid-epoch
    assert "Restoring states from the checkpoint path at" in log and "hpc_ckpt_1.ckpt" in log
    final = weights(next((tmp / "preempted/checkpoints").glob("slurm-*/last.ckpt")))
    reference = weights(next((tmp / "reference/checkpoints").glob("slurm-*/last.ckpt")))
    assert final.keys() == reference.keys()
    differ = [k for k in final if not torch.equal(final[k], reference[k])]
    assert not differ, f"resumed weights differ from the uninterrupted job's in {differ}"


def test_requeued_job_continues_the_same_wandb_run(runs):
    tmp, _, preempted, _, _, _ = runs
    folders = sorted((tmp / "preempted/wandb").glob("offline-run-*"))
    assert len(folders) == 2, folders  # one per start of the job
    assert {f.name.split("-", 3)[-1] for f in folders} == {f"slurm-{preempted}"}
