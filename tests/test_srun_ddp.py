"""DDP under srun on a real SLURM cluster (`slurm/local-cluster.sh up`): `vae slurm submit --gpus-per-node 0
--ntasks-per-node 2` runs a 2-process gloo fit. Sent USR1 mid-epoch, both ranks stop at the same step, the
job requeues and ends bitwise equal to an uninterrupted 2-task job; both ranks use one checkpoint folder
and only rank 0 logs to W&B; a rank that raises takes the job down in bounded time."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import SLURM_FIT, job_info, submit, wait_for, weights

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STEPS, PER_EPOCH = 40, 20  # 640 training images, 2 ranks, batch 16 per rank: 20 steps an epoch
FIT = [*SLURM_FIT, "--trainer.max_steps", str(STEPS), "--trainer.strategy", "ddp"]
TASKS = ("--ntasks-per-node", "2")
CRASH_BOUND = 120  # seconds from a rank's crash to the end of the job


def progress(out: Path, delay: float) -> list[str]:
    return [
        "--trainer.callbacks+=tests.probe.Progress",
        f"--trainer.callbacks.out={out}",
        f"--trainer.callbacks.delay={delay}",
    ]


def wait_for_file(path: Path, job: str, timeout: float, until=lambda text: True) -> str:
    end = time.monotonic() + timeout
    while not (path.exists() and until(path.read_text().strip())):
        assert time.monotonic() < end, f"{path.name} never came: {job_info(job)}"
        time.sleep(0.1)
    return path.read_text().strip()


@pytest.fixture(scope="module")
def jobs(cluster, tmp_path_factory):
    """An uninterrupted 2-task job, one sent USR1 mid-epoch and one whose rank 1 raises; the node's two
    cores run one 2-task job at a time, so they queue."""
    tmp = tmp_path_factory.mktemp("srun-ddp")
    reference = submit(tmp, "reference", fit=FIT, options=TASKS)
    preempted = submit(tmp, "preempted", *progress(tmp / "progress", 0.2), fit=FIT, options=TASKS)
    crash = ["--trainer.callbacks+=tests.probe.CrashAt", "--trainer.callbacks.rank=1", "--trainer.callbacks.step=5"]
    crashed = submit(tmp, "crashed", *crash, fit=FIT, options=TASKS)
    at = int(wait_for_file(tmp / "progress", preempted, 400, lambda t: t.isdigit() and int(t) >= 8))
    assert at < PER_EPOCH - 3, f"step {at}: too late for a mid-epoch preemption"
    # a plain job, not an array task: scancel signals every task of the running step once
    signal = subprocess.run(["scancel", "--signal=USR1", preempted], capture_output=True, text=True, timeout=30)
    assert signal.returncode == 0, signal.stderr
    crash_time = float(wait_for_file(tmp / "crashed/crashed", crashed, 600))
    infos = {"crashed": wait_for(crashed, timeout=CRASH_BOUND)}  # first: a hung job would hold the node
    infos |= {name: wait_for(ids, timeout=600) for name, ids in [("reference", reference), ("preempted", preempted)]}
    return tmp, {"reference": reference, "preempted": preempted, "crashed": crashed}, infos, at, crash_time


def test_the_preempted_ddp_job_requeues_and_ends_bitwise_equal_to_the_uninterrupted_one(jobs):
    tmp, ids, infos, at, _ = jobs
    log = (tmp / f"slurm-preempted-{ids['preempted']}.out").read_text()
    assert infos["reference"]["JobState"] == "COMPLETED" and infos["reference"]["Restarts"] == "0", infos["reference"]
    assert infos["preempted"]["JobState"] == "COMPLETED" and infos["preempted"]["Restarts"] == "1", (
        infos["preempted"],
        log[-3000:],
    )
    hpc = torch.load(tmp / "preempted/hpc_ckpt_1.ckpt", weights_only=False, map_location="cpu")
    assert at <= hpc["global_step"] < STEPS and hpc["global_step"] % PER_EPOCH, hpc["global_step"]  # mid-epoch
    assert log.count("Requeue signal: saved") == 1, log[-3000:]  # rank 0 requeues, once
    for name in ("reference", "preempted"):
        folder = next((tmp / name / "checkpoints").glob("slurm-*"))
        assert json.loads((folder / "provenance.json").read_text())["world_size"] == 2
    final = weights(next((tmp / "preempted/checkpoints").glob("slurm-*/last.ckpt")))
    reference = weights(next((tmp / "reference/checkpoints").glob("slurm-*/last.ckpt")))
    assert final.keys() == reference.keys()
    differ = [k for k in final if not torch.equal(final[k], reference[k])]
    assert not differ, f"the resumed DDP job's weights differ from the uninterrupted job's in {differ}"


def test_both_ranks_write_to_one_checkpoint_folder(jobs):
    tmp, ids, _, _, _ = jobs
    for name in ("reference", "preempted"):
        assert [p.name for p in (tmp / name / "checkpoints").iterdir()] == [f"slurm-{ids[name]}"]
    assert sorted(p.name for p in (tmp / "preempted").glob("hpc_ckpt_*")) == ["hpc_ckpt_1.ckpt"]
    assert sorted(p.name for p in tmp.iterdir() if p.is_dir()) == ["crashed", "preempted", "reference"]


def test_only_rank_zero_logs_to_wandb(jobs):
    tmp, ids, _, _, _ = jobs
    for name, starts in (("reference", 1), ("preempted", 2)):
        folders = sorted((tmp / name / "wandb").glob("offline-run-*"))
        assert len(folders) == starts, folders  # one per start of the job, not one per rank
        assert {f.name.split("-", 3)[-1] for f in folders} == {f"slurm-{ids[name]}"}


def test_a_rank_that_raises_fails_the_job_in_bounded_time(jobs):
    tmp, ids, infos, _, crash_time = jobs
    info = infos["crashed"]
    log = (tmp / f"slurm-crashed-{ids['crashed']}.out").read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] != "0:0", (info, log[-3000:])
    assert "probe: rank 1 crashes at step 5" in log
    ended = time.mktime(time.strptime(info["EndTime"], "%Y-%m-%dT%H:%M:%S"))
    assert ended - crash_time < CRASH_BOUND, (info["EndTime"], crash_time)
