"""Shared fixtures (local data laid out as torchvision expects it, the tiny run, the SLURM cluster) and the
two tiers: a test that starts a process must be marked slow. Plain helpers live in helpers.py."""

from __future__ import annotations

import gzip
import multiprocessing.process
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers import IN_CI, REPO, SHARED_MNIST, TINY_MODEL, run_vae, tiny_args, write_mnist_raw


@pytest.fixture(scope="session")
def mnist_test_split() -> tuple:
    """The real MNIST test split from ../shared/data/mnist as uint8 tensors (10000, 28, 28), (10000,)."""
    images, labels = SHARED_MNIST / "t10k-images-idx3-ubyte.gz", SHARED_MNIST / "t10k-labels-idx1-ubyte.gz"
    if not images.exists() or not labels.exists():
        if IN_CI:
            pytest.fail(f"CI=true but the shared MNIST files are missing under {SHARED_MNIST}")
        pytest.skip(f"needs the real MNIST test split under {SHARED_MNIST} (present on the project's machines)")
    from torchvision.datasets.mnist import read_image_file, read_label_file

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"vae-mnist-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    for src in (images, labels):
        with gzip.open(src) as f, open(tmp / src.stem, "wb") as out:
            shutil.copyfileobj(f, out)
    x, y = read_image_file(str(tmp / images.stem)), read_label_file(str(tmp / labels.stem))
    shutil.rmtree(tmp)
    return x, y


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory, mnist_test_split) -> Path:
    """A torchvision MNIST folder: 9,000 train and 1,000 test images from the real test split."""
    x, y = mnist_test_split
    return write_mnist_raw(tmp_path_factory.mktemp("mnist"), "MNIST", x, y)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict[str, str]:
    """The tiny run (tests/fixtures/tiny.yaml) fitted once in this process: {"config": its YAML, "ckpt": its
    last.ckpt, "run": its root folder}. Tests may read it and write beside it, never change its files."""
    from vae_lightning.cli import main

    run = tmp_path_factory.mktemp("tiny") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setattr("sys.argv", ["vae"])
        main(["fit", *tiny_args(), "--trainer.default_root_dir", str(run)])
    ckpt = run / "checkpoints" / "version_0" / "last.ckpt"
    assert ckpt.is_file()
    return {"config": tiny_args()[1], "ckpt": str(ckpt), "run": str(run)}


# `make test` spreads the tests over two pytest-xdist workers (--dist loadgroup), one file per worker so that
# a module's fixtures are built once. Tests that start several training processes or share the one local
# SLURM node form one group, run one after another, so that two of them never compete for the same cores or
# the same node.
ONE_AT_A_TIME = {"test_ddp.py", "test_srun_ddp.py", "test_slurm.py", "test_study_slurm.py"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups from the marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        several = item.path.name in ONE_AT_A_TIME or "ddp" in item.name
        item.add_marker(pytest.mark.xdist_group("processes" if several else item.path.name))
        if any(item.get_closest_marker(mark) for mark in IMPLY_SLOW):
            item.add_marker(pytest.mark.slow)


# ---- the two tiers -------------------------------------------------------------------------------
# `make test` runs `-m "not slow"`; it stays fast by construction: a test that starts a process (a `vae`
# subprocess, bash, srun/sbatch, DDP workers, multiprocessing, data-loader workers) must be marked
# `slow`, or it fails here. Tests that need a SLURM cluster or a GPU are slow too (the marks imply it).
IMPLY_SLOW = ("slurm", "gpu")
# the processes a fast test may start, each a few milliseconds: every fit asks `git describe` for its code
# version (runtime/provenance.py); jsonargparse's stub resolver (typeshed_client) asks the interpreter for sys.path;
# joblib (scikit-learn's histogram trees) asks `lscpu` once for the physical core count
ALLOWED = ("git", "lscpu", "import sys, json; print(json.dumps(sys.path))")


class ProcessGuard:
    """While a test not marked slow runs (its fixtures included), starting a process fails it."""

    def __init__(self) -> None:
        self.test: str | None = None  # the node id of the running fast test, else None

    def refuse(self, what: str) -> None:
        if self.test is not None:  # pytest's Failed is a BaseException: `except Exception` does not hide it
            pytest.fail(
                f"{self.test} starts a process ({what}) but is not marked slow: add @pytest.mark.slow "
                "(`make test` runs the fast tier, which starts no processes; see docs/testing.md)",
                pytrace=False,
            )

    def install(self) -> None:
        execute_child = subprocess.Popen._execute_child  # every subprocess.run/Popen/check_output/os.popen
        process_start = multiprocessing.process.BaseProcess.start  # DDP spawn, loader workers, pools
        system, fork = os.system, os.fork
        guard = self

        def guarded_execute_child(self, args, *rest, **kwargs):
            if not _allowed(args):
                guard.refuse(f"subprocess {_command(args)}")
            return execute_child(self, args, *rest, **kwargs)

        def guarded_start(self):
            guard.refuse(f"multiprocessing {type(self).__name__}")
            return process_start(self)

        def guarded_system(command):
            guard.refuse(f"os.system {command!r}")
            return system(command)

        def guarded_fork():
            guard.refuse("os.fork")
            return fork()

        subprocess.Popen._execute_child = guarded_execute_child
        multiprocessing.process.BaseProcess.start = guarded_start
        os.system, os.fork = guarded_system, guarded_fork


def _allowed(args) -> bool:
    words = [str(a) for a in args] if isinstance(args, list | tuple) else str(args).split()
    return Path(words[0]).name in ALLOWED or (len(words) == 3 and words[1] == "-c" and words[2] in ALLOWED)


def _command(args) -> str:
    words = [str(a) for a in args] if isinstance(args, list | tuple) else [str(args)]
    return repr(" ".join(words)[:80])


GUARD = ProcessGuard()


def pytest_configure(config):
    GUARD.install()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Guard the whole of a fast test: setup (module and session fixtures it is the first to need), call
    and teardown."""
    GUARD.test = None if item.get_closest_marker("slow") else item.nodeid
    try:
        return (yield)
    finally:
        GUARD.test = None


# ---- a real SLURM cluster (slurm/local-cluster.sh up): the tests marked `slurm` ---------------------------
# a tiny job: 640 training images at batch 16, 40 steps an epoch; 80 steps in all
SLURM_FIT = [
    *TINY_MODEL,
    "--data.init_args.num_images",
    "700",
    "--data.init_args.val_size",
    "60",
    "--data.init_args.batch_size",
    "16",
    "--trainer.max_steps",
    "80",
    "--trainer.val_check_interval",
    "20",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.deterministic",
    "true",
    "--trainer.enable_progress_bar",
    "false",
    "--images.every_n_val",
    "0",
]
SLURM_ENV = {"PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # jobs find tests.probe


def _cluster_state() -> str:
    if shutil.which("sinfo") is None:
        return "sinfo is not installed"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    states = out.stdout.split()
    if out.returncode or not any(s.startswith(("idle", "mix", "alloc")) for s in states):
        return f"sinfo answered {out.stdout.strip() or out.stderr.strip()!r}"
    return ""


@pytest.fixture(scope="module")
def cluster():
    problem = _cluster_state()
    if problem:
        if IN_CI:
            pytest.fail(
                f"CI=true but no SLURM cluster answers ({problem}); .ci/run starts one with slurm/local-cluster.sh up"
            )
        pytest.skip(f"no SLURM cluster answers ({problem}); start one with `sudo slurm/local-cluster.sh up`")


def job_info(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_for(
    job: str, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"), timeout: float = 240
) -> dict[str, str]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        info = job_info(job)
        if info.get("JobState") in states:
            return info
        time.sleep(0.5)
    subprocess.run(["scancel", job])
    pytest.fail(f"job {job} did not finish in {timeout} s: {job_info(job)}")


def slurm_submit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`vae slurm submit` of a CPU job on configs/base.yaml; ``args``: its options, then ``--`` and the fit's."""
    base = ["--config", str(REPO / "configs/base.yaml"), "--gpus-per-node", "0"]
    return run_vae("slurm", "submit", *base, *args, cwd=cwd, env=SLURM_ENV)


def job_id(result: subprocess.CompletedProcess) -> str:
    """The job id a successful `vae slurm submit` printed."""
    assert result.returncode == 0, result.stderr
    job = result.stdout.strip()
    assert job.isdigit(), result.stdout
    return job


def submit(tmp: Path, name: str, *extra: str, fit: list[str] = SLURM_FIT, options: tuple[str, ...] = ()) -> str:
    """Submit a CPU job ``vae fit <fit> <extra>`` in ``tmp/<name>`` (``options``: for `vae slurm submit`)."""
    root = str(tmp / name)
    return job_id(
        slurm_submit(*options, "--job-name", name, "--", *fit, "--trainer.default_root_dir", root, *extra, cwd=tmp)
    )


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=False, map_location="cpu")["state_dict"]
