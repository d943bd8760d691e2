"""The one device counter: it works where the OS has no sched_getaffinity (macOS); the LR
scheduler's first steps."""

import functools
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


# ---- memory: a huge latent_dim or width was killed for memory while the model was built ---------


def test_nets_larger_than_the_memory_left_are_refused_before_their_weights_exist(monkeypatch):
    from vae_lightning import VAE, MLPDecoder, MLPEncoder

    monkeypatch.setattr("vae_lightning.models.available_memory", lambda: 10**6)
    wide = functools.partial(MLPEncoder, hidden=[1000])  # 784 x 1000 float32 weights: 3.1 MB
    words = r"more than [\d,]+ weights \(3\.\d MB\) .* 1\.0 MB available; lower .*latent_dim \(4\)"
    with pytest.raises(UserError, match=words):
        VAE(encoder=wide, decoder=MLPDecoder, latent_dim=4, image_shape=(1, 28, 28))
    VAE(
        encoder=functools.partial(MLPEncoder, hidden=[16]),
        decoder=functools.partial(MLPDecoder, hidden=[16]),
        latent_dim=4,
        image_shape=(1, 28, 28),
    )  # fits: 1 MB is enough


def test_the_weight_budget_changes_neither_the_weights_nor_the_random_stream():
    from vae_lightning.runtime.memory import WeightBudget

    torch.manual_seed(0)
    plain, after_plain = torch.nn.Conv2d(3, 8, 4).state_dict(), torch.random.get_rng_state()
    torch.manual_seed(0)
    with WeightBudget(10**9):
        counted = torch.nn.Conv2d(3, 8, 4).state_dict()
    assert all(torch.equal(plain[k], counted[k]) for k in plain)
    assert torch.equal(after_plain, torch.random.get_rng_state())


@pytest.mark.parametrize("optimizer, have, refused", [("Adam", 8e6, True), ("Adam", 2e7, False), ("SGD", 8e6, False)])
def test_gradients_and_optimizer_state_must_fit_too(optimizer, have, refused, monkeypatch):
    monkeypatch.setattr("vae_lightning.runtime.memory.available_memory", lambda: int(have))
    model = torch.nn.Linear(1000, 1000)  # 4 MB of weights; Adam needs 12 MB more, plain SGD 4 MB
    opt = getattr(torch.optim, optimizer)(model.parameters(), lr=1e-3)
    if refused:
        words = r"1,001,000 weights \(4\.0 MB\) needs 12\.0 MB for its gradients .* this machine has 8\.0 MB"
        with pytest.raises(UserError, match=words):
            preflight._check_training_memory(model, [opt], None)
    else:
        preflight._check_training_memory(model, [opt], None)


def test_on_a_gpu_the_weights_gradients_and_adam_state_must_fit_its_memory(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=15 * 10**6))
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    model = torch.nn.Linear(1000, 1000)  # 4 MB of weights: 16 MB with gradients and Adam's two moments
    with pytest.raises(UserError, match=r"needs 16\.0 MB for its weights, gradients .* the GPU cuda:0 has 15\.0 MB"):
        preflight._check_training_memory(model, [torch.optim.Adam(model.parameters())], trainer)
    preflight._check_training_memory(model, [torch.optim.SGD(model.parameters())], trainer)  # 8 MB: fits
