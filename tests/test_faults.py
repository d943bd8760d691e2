"""Faults lose nothing: a NaN at a chosen step, SIGKILL while training and while a checkpoint is
being written, a full disk, a crashing DDP rank, an unreachable W&B server, two runs of one name."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import REPO, TINY_YAML, run_vae, snapshot, vae
from vae_lightning.models import VAE

INJECT = [sys.executable, "-m", "bench.chaos_inject"]  # the one fault injector, VAE_CHAOS picks the fault


@pytest.fixture
def tiny(monkeypatch) -> Path:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr("sys.argv", ["vae"])
    return TINY_YAML


def step_of(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def finite_weights(path: Path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return all(bool(t.isfinite().all()) for t in state.values())


def nan_at(monkeypatch, steps: set[int]) -> None:
    """Make recon NaN in training at the given global steps."""
    forward = VAE.forward

    def poisoned(self, x):
        f = forward(self, x)
        if self.training and self.global_step in steps:
            f = f._replace(recon=f.recon * float("nan"))
        return f

    monkeypatch.setattr(VAE, "forward", poisoned)


def test_nan_stops_with_the_step_and_terms_after_saving_the_last_good_state(tiny, tmp_path, capsys, monkeypatch):
    nan_at(monkeypatch, {5})
    root = tmp_path / "run"
    code, err = vae(
        capsys, "fit", "--config", str(tiny), "--trainer.default_root_dir", str(root), "--trainer.max_steps", "20"
    )
    lines = [line for line in err.splitlines() if line.startswith("vae: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "global step 5" in lines[0] and "recon=nan" in lines[0] and "grad" in lines[0], lines[0]
    last = root / "checkpoints" / "version_0" / "last.ckpt"
    assert str(last) in lines[0]
    assert step_of(last) == 5 and finite_weights(last)


def test_the_finite_check_sees_every_nan_and_inf_and_lets_huge_finite_gradients_through():
    from vae_lightning.callbacks import NonFiniteGuard

    guard = NonFiniteGuard()
    guard._loss = torch.tensor(1.0)
    huge = torch.full((1000,), 3e38)  # finite, but its sum overflows to inf
    assert guard._all_finite([huge, torch.ones(3)])
    for bad in (float("nan"), float("inf"), -float("inf")):
        g = torch.ones(1000)
        g[500] = bad
        assert not guard._all_finite([torch.ones(3), g])
    g = torch.ones(10)
    g[0], g[1] = float("inf"), -float("inf")  # the sum is NaN: still caught
    assert not guard._all_finite([g])
    guard._loss = torch.tensor(float("nan"))
    assert not guard._all_finite([torch.ones(3)])


def test_the_finite_check_leaves_gradients_of_every_dtype_bitwise_as_they_were():
    from vae_lightning.callbacks import NonFiniteGuard

    guard = NonFiniteGuard()
    guard._loss = torch.tensor(1.0)
    g32 = torch.cat([torch.randn(100) * 1e30, torch.tensor([-0.0, 1e-45, 3e38])])  # -0, a subnormal, a huge value
    g16 = torch.randn(50).bfloat16()
    before = [g32.clone(), g16.clone()]
    assert guard._all_finite([g32, g16])
    assert all(torch.equal(a, b) and torch.equal(a.signbit(), b.signbit()) for a, b in zip(before, [g32, g16]))
    g16[3] = float("nan")
    assert not guard._all_finite([g32, g16])


def test_nan_steps_are_skipped_within_the_budget(tiny, tmp_path, capsys, monkeypatch):
    nan_at(monkeypatch, {2, 5})
    root = tmp_path / "run"
    code, err = vae(
        capsys,
        "fit",
        "--config",
        str(tiny),
        "--trainer.default_root_dir",
        str(root),
        "--trainer.max_steps",
        "8",
        "--nonfinite.max_skips",
        "2",
    )
    assert code == 0, err[-2000:]
    last = root / "checkpoints" / "version_0" / "last.ckpt"
    assert step_of(last) == 8 and finite_weights(last)
    state = torch.load(last, map_location="cpu", weights_only=False)["callbacks"]
    assert [v for k, v in state.items() if k.startswith("NonFiniteGuard")] == [{"skipped": 2}]


def test_two_runs_of_one_name_keep_separate_folders_and_last_finds_the_newest(tiny, tmp_path, capsys):
    root = tmp_path / "run"
    args = ("fit", "--config", str(tiny), "--trainer.default_root_dir", str(root), "--trainer.max_steps", "2")
    assert vae(capsys, *args)[0] == 0
    first = snapshot(root)
    assert vae(capsys, *args)[0] == 0
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in first} == first, "the second run changed a file of the first"
    assert (root / "checkpoints" / "version_1" / "last.ckpt").is_file()
    # resuming picks the newest last.ckpt and continues in its folder
    code, err = vae(
        capsys,
        "fit",
        "--config",
        str(tiny),
        "--trainer.default_root_dir",
        str(root),
        "--trainer.max_steps",
        "4",
        "--ckpt_path",
        "last",
    )
    assert code == 0, err[-2000:]
    assert step_of(root / "checkpoints" / "version_1" / "last.ckpt") == 4
    assert not (root / "checkpoints" / "version_2").exists()


# ---- subprocess faults ------------------------------------------------------------------------


def _start(config: Path, root: Path, *args: str, fault: str = "none", **popen) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO), "VAE_CHAOS": fault, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [*INJECT, "fit", "--config", str(config), "--trainer.default_root_dir", str(root), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"exited early:\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < end, "timed out"
        time.sleep(0.2)


def _metric_steps(root: Path) -> list[int]:
    rows = []
    for path in root.rglob("metrics.csv"):
        with open(path) as f:
            rows += [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    return rows


# a checkpoint every 3 steps and no validation (monitor null: with a monitor, Lightning defers
# periodic saves until the first validation)
EVERY_3_STEPS = (
    "--trainer.val_check_interval",
    "1000",
    "--checkpoint.every_n_train_steps",
    "3",
    "--checkpoint.monitor",
    "null",
)


@pytest.mark.slow
def test_sigkill_while_a_checkpoint_is_written_then_resume_loses_only_the_steps_since(tiny, tmp_path):
    root = tmp_path / "run"
    folder = root / "checkpoints" / "version_0"
    # checkpoints at steps 3 and 6 complete; the one at step 9 hangs half-written until killed
    proc = _start(tiny, root, "--trainer.max_steps", "400", *EVERY_3_STEPS, fault="slow_save:3")
    try:
        _wait_for(lambda: any(folder.glob("*.writing")), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert any(folder.glob(".last.ckpt.tmp-*")), "the kill did not land during the write"
    assert step_of(folder / "last.ckpt") == 6 and finite_weights(folder / "last.ckpt")
    resumed = run_vae(
        "fit",
        "--config",
        str(tiny),
        "--trainer.default_root_dir",
        str(root),
        "--ckpt_path",
        "last",
        "--trainer.max_steps",
        "10",
        *EVERY_3_STEPS,
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir",
        str(root / "csv"),
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {folder / 'last.ckpt'}" in resumed.stderr + resumed.stdout
    steps = _metric_steps(root / "csv")
    assert steps and min(steps) >= 6 and max(steps) == 9, steps  # trained steps 7..10 only (logged 0-based)
    assert step_of(folder / "last.ckpt") == 10  # last.ckpt also holds the final state


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_stops_clearly_and_keeps_the_previous_one(tiny, tmp_path):
    root = tmp_path / "run"
    folder = root / "checkpoints" / "version_0"
    proc = _start(tiny, root, "--trainer.max_steps", "20", *EVERY_3_STEPS, fault="fsize_after:1")
    out, _ = proc.communicate(timeout=240)
    lines = [line for line in out.splitlines() if line.startswith("vae: error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in out, out[-3000:]
    assert "cannot write checkpoint" in lines[0] and "last.ckpt" in lines[0] and "intact" in lines[0], lines[0]
    assert step_of(folder / "last.ckpt") == 3 and finite_weights(folder / "last.ckpt")
    assert not list(folder.glob(".*tmp*")), "a temporary file was left behind"


@pytest.mark.slow
def test_a_crashing_ddp_rank_makes_every_rank_exit_non_zero_in_bounded_time(tiny, tmp_path):
    ddp = tmp_path / "ddp.yaml"
    ddp.write_text(
        "trainer:\n  accelerator: cpu\n  devices: 2\n  strategy:\n"
        "    class_path: lightning.pytorch.strategies.DDPStrategy\n"
        "    init_args: {process_group_backend: gloo, timeout: '0:01:00'}\n"
    )
    proc = _start(
        tiny,
        tmp_path / "run",
        "--config",
        str(ddp),
        "--trainer.max_steps",
        "50",
        fault="crash_rank:1:3",
        start_new_session=True,
    )
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode not in (0, None), out[-3000:]
    assert "injected crash on rank 1" in out
    end = time.monotonic() + 60  # the other rank must be gone too
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < end, "a DDP rank is still running"
        time.sleep(0.5)


@pytest.mark.slow
def test_wandb_online_without_a_server_falls_back_to_offline_with_a_warning(tiny, tmp_path):
    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "run"
    env = {
        "WANDB_MODE": "online",
        "WANDB_BASE_URL": f"http://127.0.0.1:{port}",
        "WANDB_API_KEY": "x" * 40,
        "VAE_WANDB_INIT_TIMEOUT": "2",
        "WANDB_SILENT": "false",
    }
    result = run_vae(
        "fit",
        "--config",
        str(tiny),
        "--trainer.default_root_dir",
        str(root),
        "--trainer.max_steps",
        "2",
        "--trainer.logger",
        "lightning.pytorch.loggers.WandbLogger",
        "--trainer.logger.init_args.offline",
        "false",
        env=env,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "W&B could not start an online run" in result.stderr
    assert list((root / "wandb").glob("offline-run-*"))
