"""A SLURM requeue signal (USR1) that reaches `vae fit` while it is still starting up (before any
trainer exists) is recorded, not fatal: the run saves its hpc checkpoint after the first step,
requeues the job and stops with exit status 0. Under a fake SLURM environment, with a stand-in
`scontrol` that records its arguments; no cluster needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import FAKE_SLURM, REPO, tiny_args

pytestmark = pytest.mark.slow

FIT = tiny_args(trainer__accelerator="cpu", trainer__max_steps=20)


def catches_usr1(pid: int) -> bool:
    """Whether process ``pid`` has a handler for USR1 (Linux: the SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGUSR1 - 1) & 1)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status (SLURM runs on Linux)")
def test_usr1_during_start_up_saves_requeues_and_stops_cleanly(tmp_path):
    bin_dir, requeued = tmp_path / "bin", tmp_path / "requeued"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {requeued}\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = {
        **os.environ,
        **FAKE_SLURM,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "WANDB_MODE": "offline",
    }
    root = tmp_path / "run"
    command = [sys.executable, "-m", "vae_lightning", "fit", *FIT, "--trainer.default_root_dir", str(root)]
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    end = time.monotonic() + 60
    while True:
        assert proc.poll() is None and time.monotonic() < end, "`vae fit` never installed a USR1 handler"
        starting = "libtorch" not in Path(f"/proc/{proc.pid}/maps").read_text()  # read first: then the handler
        if catches_usr1(proc.pid):
            break
        time.sleep(0.005)
    assert starting, "the first USR1 handler came after torch was loaded: a USR1 of the start-up would kill"
    os.kill(proc.pid, signal.SIGUSR1)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert requeued.read_text().split() == ["requeue", FAKE_SLURM["SLURM_JOB_ID"]]
    hpc = torch.load(root / "hpc_ckpt_1.ckpt", weights_only=False, map_location="cpu")
    assert hpc["global_step"] == 1, hpc["global_step"]  # acted on at the first step boundary
    assert "Requeue signal: saved" in out and "at step 1;" in out, out[-3000:]
