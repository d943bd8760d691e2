"""DDP for real: 2 CPU processes (gloo) through the `vae` entry point, fit then test."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest
import torch

from helpers import REPO, TINY_MODEL, run_vae, vae_command
from probe import RecordIndices
from vae_lightning.cli.lightning import VAECLI
from vae_lightning.runtime.checkpoint import PENDING_DIR, run_checkpoint_dir

# 45 held-out sprites at batch 16: ranks test 23 and 22 examples in batches of 16+7 and 16+6, so
# averaging per-rank means would differ from the mean over all 45.
TINY = [
    "--config",
    str(REPO / "configs/base.yaml"),
    *TINY_MODEL,
    "--data.init_args.num_images",
    "301",
    "--data.init_args.val_size",
    "45",
    "--data.init_args.batch_size",
    "16",
    "--trainer.accelerator",
    "cpu",
    "--trainer.enable_progress_bar",
    "false",
    "--images.num_images",
    "8",
    "--disentanglement.metrics",
    "[mig,factor_vae]",  # the classifier-based metrics add minutes on rank zero and test nothing of DDP
]
DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
ENV = {"PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def probe(out) -> list[str]:
    return ["--trainer.callbacks+=tests.probe.RecordIndices", f"--trainer.callbacks.out={out}"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    fit = run_vae(
        "fit",
        *TINY,
        *DDP,
        "--trainer.default_root_dir",
        str(root / "run"),
        "--trainer.max_steps",
        "20",
        "--trainer.val_check_interval",
        "10",
        *probe(root / "fit"),
        env=ENV,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    return root


@pytest.mark.slow
def test_ddp_fit_splits_the_data_and_only_rank_zero_writes(ddp_run):
    run = ddp_run / "run"
    train = [torch.load(ddp_run / "fit" / f"train_rank{r}.pt") for r in (0, 1)]
    assert len(train[0]) == len(train[1]) == 128  # 256 training images: 8 batches of 16 per rank
    assert not set(train[0].tolist()) & set(train[1].tolist()), "the ranks trained on the same images"
    offline_runs = list((run / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1, offline_runs
    # both ranks agreed on one run folder (version_0) and only rank zero wrote into it
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["version_0"]
    folder = run / "checkpoints" / "version_0"
    assert sorted(p.name for p in folder.iterdir()) == [
        "best-20.ckpt",
        "history.csv",
        "last.ckpt",
        "provenance.json",
        "summary.json",
        "vae_config.yaml",
    ]  # checkpoints, run records and provenance
    steps = [row.split(",")[0] for row in (folder / "history.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps), key=int)  # one writer: each logged step once
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 20
    # two validations: each picture drawn once (by rank zero), at steps 10 and 20
    pngs = [p.name for p in (run / "images" / "version_0").glob("*.png")]
    assert (
        pngs
        and len(pngs) == len(set(pngs))
        and {"reconstructions_step0000010.png", "reconstructions_step0000020.png"} <= set(pngs)
    )
    assert not list(run.rglob("*rank1*")) and not list(run.rglob("version_1"))


@pytest.mark.slow
def test_ddp_test_metrics_equal_a_single_process_evaluation(ddp_run):
    ckpt = ddp_run / "run" / "checkpoints" / "version_0" / "last.ckpt"
    test = run_vae(
        "test",
        *TINY,
        *DDP,
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        str(ddp_run / "test-ddp"),
        "--ckpt_path",
        str(ckpt),
        *probe(ddp_run / "ddp"),
        env=ENV,
    )
    assert test.returncode == 0, test.stderr[-3000:]
    ddp = json.loads((ddp_run / "ddp" / "test_metrics.json").read_text())
    # the same checkpoint evaluated by one process, in this one
    single = VAECLI(
        [
            *TINY,
            "--trainer.devices",
            "1",
            "--trainer.logger",
            "false",
            "--trainer.default_root_dir",
            str(ddp_run / "test-single"),
        ],
        run=False,
    )
    single.trainer.callbacks.append(RecordIndices(str(ddp_run / "single")))
    single.trainer.test(single.model, datamodule=single.datamodule, ckpt_path=str(ckpt))
    one = json.loads((ddp_run / "single" / "test_metrics.json").read_text())
    ranks = [set(torch.load(ddp_run / "ddp" / f"test_rank{r}.pt").tolist()) for r in (0, 1)]
    everything = set(torch.load(ddp_run / "single" / "test_rank0.pt").tolist())
    assert (len(ranks[0]), len(ranks[1])) == (23, 22)
    assert not ranks[0] & ranks[1] and ranks[0] | ranks[1] == everything and len(everything) == 45
    assert ddp["test/kl_weight"] == 1.0  # a constant averages to itself (Lightning's sync_dist gave 45/44)
    # the KL is closed-form (no sampling): only the summation order differs
    assert ddp["test/kl"] == pytest.approx(one["test/kl"], rel=1e-5)
    # recon and elbo draw one z per example; different ranks draw different noise
    for key in ("test/recon", "test/elbo", "test/loss"):
        assert ddp[key] == pytest.approx(one[key], rel=0.02), key


# ---- two nodes without SLURM: one process per node, Lightning's LightningEnvironment ----------

SHORT = ["--trainer.max_steps", "12", "--trainer.deterministic", "true", "--trainer.logger", "false"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _states(ckpt) -> dict:
    """Every tensor of a checkpoint's weights and optimizer state, by a flat name."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    flat = {f"weights.{k}": v for k, v in state["state_dict"].items()}
    for i, opt in enumerate(state["optimizer_states"]):
        for p, entries in opt["state"].items():
            flat |= {f"optimizer{i}.{p}.{k}": v for k, v in entries.items() if torch.is_tensor(v)}
    return flat


def test_a_process_of_another_node_makes_no_run_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("VAE_RUN_DIR", raising=False)
    for name in ("RANK", "LOCAL_RANK", "GROUP_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NODE_RANK", "1")
    assert run_checkpoint_dir(tmp_path / "checkpoints", None).name == PENDING_DIR
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
    monkeypatch.setenv("NODE_RANK", "0")
    assert run_checkpoint_dir(tmp_path / "checkpoints", None).name == "version_0"


@pytest.mark.slow
def test_two_nodes_of_one_process_train_the_weights_of_one_node_of_two(tmp_path):
    one = run_vae("fit", *TINY, *DDP, *SHORT, "--trainer.default_root_dir", str(tmp_path / "one"), env=ENV, timeout=240)
    assert one.returncode == 0, one.stderr[-3000:]
    # both nodes get the same default_root_dir, as on a cluster's shared file system
    root = tmp_path / "two"
    args = ["fit", *TINY, *SHORT, "--trainer.strategy", "ddp", "--trainer.devices", "1", "--trainer.num_nodes", "2"]
    env = {**os.environ, **ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WANDB_MODE": "offline"}
    nodes = [
        subprocess.Popen(
            [*vae_command(), *args, "--trainer.default_root_dir", str(root)],
            env={**env, "NODE_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (1, 0)  # node 1 first: the node that starts first must not take the folder
    ]
    try:
        outs = [node.communicate(timeout=240)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(out[-2000:] for out in outs)
    assert [p.name for p in (root / "checkpoints").iterdir()] == ["version_0"]
    assert not list(root.rglob(PENDING_DIR))
    a, b = _states(tmp_path / "one/checkpoints/version_0/last.ckpt"), _states(root / "checkpoints/version_0/last.ckpt")
    assert torch.load(root / "checkpoints/version_0/last.ckpt", weights_only=False)["global_step"] == 12
    assert a.keys() == b.keys() and len(a) > 10
    # the same gradients averaged by gloo over another process layout: only the summation order
    # may differ (measured: at most ~1e-6 after 12 steps), far below a difference in data or noise
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst
