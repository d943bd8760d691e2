"""Chaos: a 300-step fit interrupted at 20+ seeded random points (SIGKILL mid-step and mid-
checkpoint-write, USR1 under SLURM variables, an exception in a step) and resumed each time with
the same command and ``--ckpt_path last`` ends bitwise equal to the fit that was never
interrupted. The driver is ``bench/chaos.py`` (``python -m bench.chaos --interruptions 100`` is
the long version); set VAE_CHAOS_SEED to replay another schedule. With weight averaging
(configs/trainer/ema.yaml) the averaged and the raw weights both resume bitwise."""

from __future__ import annotations

import os

import pytest
import torch

from bench.chaos import KINDS, run
from vae_lightning.runtime.checkpoint import find_last

SEED = int(os.environ.get("VAE_CHAOS_SEED", "13"))


@pytest.mark.slow
def test_a_fit_interrupted_at_random_points_resumes_to_the_uninterrupted_state(tmp_path):
    report = run(tmp_path, interruptions=22, seed=SEED, steps=300)
    replay = f"seed {SEED}: replay with VAE_CHAOS_SEED={SEED} or `{report['replay']}`"
    assert report["interruptions"] >= 20, (replay, report["events"])
    assert min(report["kinds"].values()) >= 3 and set(report["kinds"]) == set(KINDS), (replay, report["kinds"])
    # every SIGKILL of a checkpoint write landed in the middle of it: a half-written temporary file remains
    kills = [e for e in report["events"] if e["kind"] == "kill_save"]
    assert all(e["half_written"] for e in kills), (replay, kills)
    # a USR1 saves after the step it arrives in, so the next start loses no step
    usr1 = [e for e in report["events"] if e["kind"] == "usr1"]
    assert all(e["saved"] == e["resumed_from"] + e["n"] for e in usr1), (replay, usr1)
    assert report["equal"], (replay, report["differ"][:10])


@pytest.mark.slow
def test_weight_averaging_resumes_bitwise_through_every_kind_of_interruption(tmp_path):
    """The averaged weights (state_dict), the raw ones (current_model_state), the averaging state and
    EMAWeightAveraging's own state end bitwise equal to the uninterrupted fit's."""
    report = run(tmp_path, interruptions=12, seed=SEED, steps=200, ema=True)
    replay = f"seed {SEED}: replay with VAE_CHAOS_SEED={SEED} or `{report['replay']}`"
    assert report["interruptions"] >= 12 and min(report["kinds"].values()) >= 3, (replay, report["kinds"])
    final = torch.load(find_last(tmp_path / "chaos" / "run" / "checkpoints"), map_location="cpu", weights_only=False)
    assert "current_model_state" in final and int(final["averaging_state"]["n_averaged"]) == 200, replay
    assert report["equal"], (replay, report["differ"][:10])
