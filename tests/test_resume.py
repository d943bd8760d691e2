"""Exact resume without SLURM: a run stopped at step k (mid-epoch, at an epoch's end, at and after
a validation) and resumed from its checkpoint ends with weights bitwise equal to a run that never
stopped. Needs the data position (BatchLoader.state_dict) and the RNG state (RNGState)."""

from __future__ import annotations

import itertools
import os
import signal

import pytest
import torch
from lightning.pytorch import Callback

from helpers import FAKE_SLURM, QUIET_CPU, TINY_MODEL, assert_same
from vae_lightning.callbacks import RNGState, SLURMPreemption
from vae_lightning.cli.lightning import VAECLI
from vae_lightning.data.loader import BatchLoader, TensorSource
from vae_lightning.runtime.checkpoint import find_last
from vae_lightning.runtime.records import read_history, read_summary

# 200 training images at batch 16: an epoch is 12 steps (drop_last); validate every 10 steps.
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
    *QUIET_CPU,
    "--trainer.val_check_interval",
    "10",
    "--trainer.check_val_every_n_epoch",
    "null",
    "--trainer.limit_val_batches",
    "2",
    "--images.every_n_val",
    "0",
]
TOTAL = 30  # 2.5 epochs


def fit(root, max_steps: int, *extra: str, callbacks=(), ckpt_path=None):
    cli = VAECLI(
        [*TINY, "--trainer.default_root_dir", str(root), "--trainer.max_steps", str(max_steps), *extra], run=False
    )
    cli.trainer.callbacks.extend(callbacks)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return cli.trainer, {k: v.detach().clone() for k, v in cli.model.state_dict().items()}


class SignalAt(Callback):
    """Sends USR1 to this process between backward and optimizer step of step ``step`` (the worst
    moment for a checkpoint written inside the signal handler)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"simulated crash at step {self.step}")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return fit(tmp_path_factory.mktemp("straight"), TOTAL)[1]


@pytest.fixture
def fake_slurm(monkeypatch):
    for name, value in FAKE_SLURM.items():
        monkeypatch.setenv(name, value)
    requeued = []
    monkeypatch.setattr(SLURMPreemption, "requeue", lambda self, job: requeued.append(job))
    sigterm = signal.getsignal(signal.SIGTERM)
    yield requeued
    signal.signal(signal.SIGTERM, sigterm)  # a requeued job ignores SLURM's SIGTERM; pytest must not


@pytest.mark.slow
@pytest.mark.parametrize("signal_step, saved_step", [(4, 5), (11, 12)], ids=["mid-epoch", "epoch-end"])
def test_preempted_run_resumes_to_bitwise_equal_weights(tmp_path, straight, fake_slurm, signal_step, saved_step):
    trainer, _ = fit(tmp_path, TOTAL, callbacks=[SignalAt(signal_step)])
    assert trainer.global_step == saved_step  # the step in flight finished, then the run stopped
    assert fake_slurm == ["4242"]
    assert (tmp_path / "hpc_ckpt_1.ckpt").exists()
    assert read_summary(tmp_path / "checkpoints")["status"] == "preempted"  # requeued: not finished, not failed
    trainer, weights = fit(tmp_path, TOTAL)  # the requeued job: same command, Lightning finds hpc_ckpt_1
    assert trainer.global_step == TOTAL
    summary = read_summary(tmp_path / "checkpoints")
    assert summary["status"] == "finished" and summary["step"] == TOTAL
    rows = read_history(tmp_path / "checkpoints")
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})  # no row twice
    assert {10, 20, 30} <= {r["step"] for r in rows if "val/elbo" in r}  # (Lightning also validates as it stops)
    assert_same(weights, straight, f"USR1 at step {signal_step}")


@pytest.mark.slow
@pytest.mark.parametrize("val_every, crash_step, saved_step", [(7, 9, 7)], ids=["mid-epoch-validation"])
def test_crashed_run_resumed_from_last_ckpt_gives_bitwise_equal_weights(
    tmp_path, straight, val_every, crash_step, saved_step
):
    # validation draws its noise from a copy of the RNG, so validating at other steps (every 7)
    # than the reference run (every 10) leaves training unchanged
    extra = ("--trainer.val_check_interval", str(val_every))
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tmp_path / "a", TOTAL, *extra, callbacks=[CrashAt(crash_step)])
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert read_summary(tmp_path / "a" / "checkpoints")["status"] == "failed"
    assert torch.load(ckpt, weights_only=False)["global_step"] == saved_step
    trainer, weights = fit(tmp_path / "b", TOTAL, *extra, ckpt_path=str(ckpt))
    assert trainer.global_step == TOTAL
    assert_same(weights, straight, f"crash at step {crash_step}, resumed from step {saved_step}")


@pytest.mark.slow
@pytest.mark.parametrize("signal_step", [11], ids=["epoch-end"])
def test_preempted_run_resumed_with_ckpt_path_last_gives_bitwise_equal_weights(
    tmp_path, straight, fake_slurm, signal_step
):
    """A job script may pass --ckpt_path last: the requeued job then resumes from the last.ckpt
    written as the preempted run stopped, not from its hpc_ckpt (bench/chaos.py, seed 0, 40
    interruptions, ended with other weights after a USR1 in an epoch's last step)."""
    fit(tmp_path, TOTAL, callbacks=[SignalAt(signal_step)])
    last = find_last(tmp_path / "checkpoints")
    assert torch.load(last, weights_only=False)["global_step"] == signal_step + 1
    trainer, weights = fit(tmp_path, TOTAL, ckpt_path=str(last))
    assert trainer.global_step == TOTAL
    assert_same(weights, straight, f"USR1 at step {signal_step}, resumed from last.ckpt")


@pytest.mark.slow
def test_without_the_rng_state_the_resumed_weights_differ(tmp_path, straight, fake_slurm):
    """The control: the tests above can fail. Dropping the RNG state from the checkpoint changes
    the reparameterization noise after the resume, so the weights are no longer equal."""
    fit(tmp_path, TOTAL, callbacks=[SignalAt(4)])
    ckpt = tmp_path / "hpc_ckpt_1.ckpt"
    state = torch.load(ckpt, weights_only=False)
    state["callbacks"] = {k: v for k, v in state["callbacks"].items() if "RNGState" not in k}
    torch.save(state, ckpt)
    _, weights = fit(tmp_path, TOTAL)
    assert any(not torch.equal(weights[name], straight[name]) for name in weights)


@pytest.mark.slow
def test_factor_vae_resumed_from_a_crash_is_bitwise_equal(tmp_path):
    """As for the VAE above: crash at step 9, resume from last.ckpt (step 7)."""
    extra = (
        "--model",
        "vae_lightning.FactorVAE",
        "--model.init_args.disc_hidden",
        "32",
        "--model.init_args.disc_layers",
        "3",
        "--trainer.val_check_interval",
        "7",
    )
    _, straight = fit(tmp_path / "straight", 30, *extra)
    with pytest.raises(RuntimeError, match=r"simulated crash"):
        fit(tmp_path / "a", 30, *extra, callbacks=[CrashAt(9)])
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == 7
    trainer, weights = fit(tmp_path / "b", 30, *extra, ckpt_path=str(ckpt))
    assert trainer.global_step == 30
    assert any(name.startswith("discriminator.") for name in weights)
    assert_same(weights, straight, "FactorVAE, crash at step 9, resumed from step 7")


def _batches(loader, n=None):
    return [y.clone() for _, y in itertools.islice(loader, n)]  # islice fetches no batch beyond n


@pytest.mark.parametrize("world_size", [1, 2])
def test_batch_loader_resumes_to_the_same_next_batch(world_size):
    source = TensorSource(torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50))

    def make(rank):
        return BatchLoader(
            source,
            torch.arange(50),
            8,
            shuffle=True,
            drop_last=True,
            seed=3,
            binarize="dynamic",
            rank=rank,
            world_size=world_size,
        )

    for rank in range(world_size):
        reference = make(rank)
        epochs = [_batches(reference) for _ in range(3)]
        flat = [b for e in epochs for b in e]
        per_epoch = len(epochs[0])
        for stop in range(1, len(flat)):  # stop after `stop` batches, at every position
            first = make(rank)
            seen = []
            while len(seen) < stop:
                seen += _batches(first, stop - len(seen))
            state = first.state_dict()
            resumed = make(rank)
            resumed.load_state_dict(state)
            rest = []
            while len(seen) + len(rest) < len(flat):
                rest += _batches(resumed)
            assert all(torch.equal(a, b) for a, b in zip(seen + rest, flat)), (rank, stop, per_epoch)


def test_each_ddp_rank_restores_its_own_rng_state_from_a_checkpoint_of_the_same_world_size():
    states = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        states.append({"cpu": torch.get_rng_state()})

    class Rank1:
        world_size, global_rank = 2, 1

    rng = RNGState()
    rng.setup(Rank1(), None, "fit")
    rng.load_state_dict({"torch": states[0], "ranks": states})  # as rank 0 wrote it: every rank's state
    assert torch.equal(torch.get_rng_state(), states[1]["cpu"])
    Rank1.world_size = 3  # resumed with another world size: rank 0's stream for every rank
    rng.load_state_dict({"torch": states[0], "ranks": states})
    assert torch.equal(torch.get_rng_state(), states[0]["cpu"])
