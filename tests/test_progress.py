"""The progress display: a bar in a terminal that redraws at most every ``refresh_s`` however fast
the steps come, plain status lines in a pipe (step, images/s, loss, ETA), configurable through
``trainer.callbacks`` like any callback, and off when the trainer says so."""

from __future__ import annotations

import os
import re
import subprocess
import time

import lightning as L
import pytest
from lightning.pytorch.callbacks import TQDMProgressBar

from helpers import REPO, TINY_MODEL, TinyData, vae_command
from vae_lightning import VAE, MLPDecoder, MLPEncoder
from vae_lightning.callbacks import progress
from vae_lightning.callbacks.progress import ProgressDisplay, duration
from vae_lightning.cli.lightning import VAECLI

STEPS = 150
FIT = [
    "fit",
    "--config",
    "configs/base.yaml",
    "--config",
    "configs/sprites/vae.yaml",
    *TINY_MODEL,
    "--data.init_args.num_images",
    "3000",
    "--data.init_args.val_size",
    "100",
    "--data.init_args.batch_size",
    "16",
    "--trainer.max_steps",
    str(STEPS),
    "--trainer.limit_val_batches",
    "2",
    "--trainer.val_check_interval",
    "100",
    "--trainer.logger",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--images.every_n_val",
    "0",
]
LINE = re.compile(r"^step (\d+)/(\d+) \| (\d+|\?) img/s, loss (-?[\d.e+-]+), ETA (\d+:\d\d:\d\d|\?)$")


def env() -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    # one thread: a tiny model gains nothing from two, and spinning threads crawl on a busy machine
    return {**clean, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def fit_tiny(tmp_path, display: ProgressDisplay, steps: int) -> None:
    L.seed_everything(0)
    model = VAE(encoder=MLPEncoder, decoder=MLPDecoder, latent_dim=2, image_shape=(1, 8, 8))
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        callbacks=[display],
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=TinyData(batch_size=8))


@pytest.mark.parametrize("mode, interval", [("bar", 0.25), ("lines", 0.1)])
@pytest.mark.slow
def test_the_display_draws_once_per_interval_however_fast_the_steps_come(tmp_path, monkeypatch, capsys, mode, interval):
    now = [0.0]

    def fake_clock():  # every read is 1 ms later: 200 steps take 0.2 s of display time
        now[0] += 0.001
        return now[0]

    monkeypatch.setattr(progress, "clock", fake_clock)
    fit_tiny(tmp_path, ProgressDisplay(mode=mode, refresh_s=interval, every_s=interval), steps=200)
    out = capsys.readouterr().out
    frames = out.split("\r")[1:] if mode == "bar" else out.splitlines()
    assert 2 <= len(frames) <= now[0] / interval + 2  # the first step, one per interval, the end
    assert ("\r" in out) == (mode == "bar")
    last = frames[-1].strip()
    assert "200/200" in last and "loss" in last and "ETA 0:00:00" in last


@pytest.mark.slow
def test_in_a_terminal_the_bar_redraws_a_few_times_a_second_not_every_step(tmp_path):
    master, slave = os.openpty()
    started = time.monotonic()
    proc = subprocess.Popen(
        [*vae_command(), *FIT, "--trainer.default_root_dir", str(tmp_path)],
        cwd=REPO,
        env=env(),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    err = proc.communicate(timeout=900)[1].decode()
    elapsed = time.monotonic() - started
    os.close(master)
    assert proc.returncode == 0, err[-2000:]
    out = b"".join(chunks).decode(errors="replace")
    frames = [f for f in out.split("\r") if "%|" in f]
    assert frames and f"{STEPS}/{STEPS}" in frames[-1]
    assert "loss" in frames[-1] and "ETA" in frames[-1]
    assert len(frames) <= elapsed / 0.25 + 3  # at most one per refresh_s (0.25 s), plus the first and the end
    assert "validation at step 100: val/loss" in out


@pytest.mark.slow
def test_in_a_pipe_status_lines_come_every_n_seconds_set_through_trainer_callbacks(tmp_path):
    config = tmp_path / "progress.yaml"
    config.write_text(
        "trainer:\n  callbacks:\n    - class_path: vae_lightning.callbacks.ProgressDisplay\n"
        "      init_args: {every_s: 0.5}\n"
    )
    started = time.monotonic()
    proc = subprocess.run(
        [*vae_command(), *FIT, "--config", str(config), "--trainer.default_root_dir", str(tmp_path)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stdout
    status = [m for m in map(LINE.match, proc.stdout.splitlines()) if m]
    assert status and status[-1].group(1) == status[-1].group(2) == str(STEPS)
    assert len(status) <= elapsed / 0.5 + 3
    steps = [int(m.group(1)) for m in status]
    assert steps == sorted(steps) and float(status[-1].group(4)) > 0  # a Bernoulli loss is a positive number
    assert any(line.startswith("validation at step 100: val/loss") for line in proc.stdout.splitlines())


def bars(*args: str) -> list:
    cli = VAECLI(
        args=[
            "--config",
            str(REPO / "configs/base.yaml"),
            "--config",
            str(REPO / "configs/sprites/vae.yaml"),
            "--trainer.logger",
            "false",
            *args,
        ],
        run=False,
    )
    return [type(c) for c in cli.trainer.callbacks if isinstance(c, L.pytorch.callbacks.ProgressBar)]


def test_vae_uses_the_display_by_default_and_keeps_a_bar_the_config_brings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bars() == [ProgressDisplay]
    assert bars("--trainer.callbacks", "lightning.pytorch.callbacks.TQDMProgressBar") == [TQDMProgressBar]
    assert bars("--trainer.enable_progress_bar", "false") == []


def test_bad_settings_and_durations():
    with pytest.raises(ValueError, match="mode"):
        ProgressDisplay(mode="fancy")
    with pytest.raises(ValueError, match="every_s"):
        ProgressDisplay(every_s=0)
    assert duration(3725.4) == "1:02:05" and duration(float("nan")) == "?"
