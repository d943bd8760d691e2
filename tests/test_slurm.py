"""On a real SLURM cluster (`slurm/local-cluster.sh up`): `vae slurm submit` runs `vae fit`; a job
sent USR1 mid-epoch checkpoints, requeues itself, resumes and ends bitwise equal to a job that
was never interrupted, in the same W&B run."""

from __future__ import annotations

import subprocess
import time

import pytest
import torch

from conftest import job_info, submit, wait_for, weights

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


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
