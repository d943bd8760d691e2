"""The one device counter: it works where the OS has no sched_getaffinity (macOS); the LR
scheduler's first steps."""

import os

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, LambdaLR

from vae_lightning.cli import preflight
from vae_lightning.errors import UserError


def test_cpu_cores_fall_back_to_cpu_count_without_sched_getaffinity(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert preflight.cpu_cores() == 3
    preflight.check_hardware("cpu", 2, None)  # fits: no AttributeError, no UserError
    with pytest.raises(UserError, match=r"trainer.devices=4 .* 3 CPU cores"):
        preflight.check_hardware("cpu", 4, None)


def test_cpu_cores_follow_the_affinity_mask_where_there_is_one(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert preflight.cpu_cores() == 2


@pytest.mark.parametrize("devices, count", [(2, 2), ("3", 3), ("0,1", 2), ([0, 1, 2], 3), ("auto", None), (-1, None)])
def test_requested_devices(devices, count):
    assert preflight.requested_devices(devices) == count


@pytest.mark.parametrize("devices", [0, "two"])
def test_impossible_device_requests_are_one_sentence(devices):
    with pytest.raises(UserError, match="trainer.devices"):
        preflight.requested_devices(devices)


def _scheduler(make):
    return make(torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3))


@pytest.mark.parametrize(
    "make",
    [
        lambda o: CosineAnnealingLR(o, T_max=1),  # 0 at step 1, then back up
        lambda o: LambdaLR(o, lambda step: step / 100),  # a warm-up from 0
        lambda o: ExponentialLR(o, gamma=0.5),
    ],
)
def test_a_schedule_that_keeps_a_positive_learning_rate_passes_its_first_steps(make):
    preflight._first_step(_scheduler(make), "step")


def test_a_schedule_that_makes_the_learning_rate_infinite_names_its_argument():
    with pytest.raises(UserError, match=r"ExponentialLR makes the learning rate inf .*\(its gamma=inf\)"):
        preflight._first_step(_scheduler(lambda o: ExponentialLR(o, gamma=float("inf"))), "step")
