"""Refused means untouched (issue 26): a command refused for a reason that can be known before
the run (missing data, labels the split does not have, a batch larger than the data) is refused
before any logger or record writes, so the folders of a finished run keep every byte; and
accepted inputs give the result they ask for. Runs in-process through `vae_lightning.cli.main`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from conftest import write_mnist_raw
from vae_lightning.cli import main

TINY = """
trainer:
  max_steps: 2
  limit_val_batches: 1
  limit_test_batches: 1
  limit_predict_batches: 2
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {save_dir: ., name: csv}
model:
  class_path: vae_lightning.VAE
  init_args:
    latent_dim: 4
    iw_samples: 2
    encoder: {class_path: vae_lightning.MLPEncoder, init_args: {hidden: [16]}}
    decoder: {class_path: vae_lightning.MLPDecoder, init_args: {hidden: [16]}}
data:
  class_path: vae_lightning.data.MNISTDataModule
  init_args: {batch_size: 8, val_size: 40, data_dir: DATA}
images:
  every_n_val: 0
scores:
  background_images: 8
"""


def vae(capsys, *args: str) -> tuple[int, str]:
    """Run `vae ARGS` in this process; returns (exit status, stderr)."""
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def snapshot(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict[str, Path]:
    """A finished tiny MNIST-layout run (random digits, no download) that was fit, tested and
    predicted with a CSV logger: {"base", "config", "root", "ckpt"}."""
    base = tmp_path_factory.mktemp("untouched")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (300, 28, 28), dtype=torch.uint8, generator=g)
    write_mnist_raw(base / "data", "MNIST", images, torch.arange(300) % 10, n_train=200)
    config = base / "tiny.yaml"
    config.write_text(TINY.replace("DATA", str(base / "data")))
    root = base / "run"
    ckpt = root / "checkpoints" / "version_0" / "last.ckpt"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setattr("sys.argv", ["vae"])
        mp.chdir(base)
        main(["fit", "--config", str(config), "--trainer.default_root_dir", str(root)])
        main(["test", "--ckpt_path", str(ckpt)])
        main(["predict", "--ckpt_path", str(ckpt)])
    assert (root / "csv" / "version_0" / "test" / "metrics.csv").is_file()
    assert (root / "csv" / "version_0" / "predict" / "vae_config.yaml").is_file()
    return {"base": base, "config": config, "root": root, "ckpt": ckpt}


@pytest.fixture
def calm(monkeypatch, finished):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr("sys.argv", ["vae"])
    monkeypatch.delenv("VAE_DEBUG", raising=False)
    monkeypatch.chdir(finished["base"])


FIT = ["fit", "--config", "{config}", "--trainer.default_root_dir", "{base}/run"]

# (id, command and arguments ({ckpt}, {config}, {base}), words of the one-line message)
REFUSED = [
    (
        "test-missing-data",
        ["test", "--ckpt_path", "{ckpt}", "--data.init_args.data_dir", "{base}/missing"],
        ["missing", "does not exist"],
    ),
    ("predict-absent-label", ["predict", "--ckpt_path", "{ckpt}", "--scores.anomalous_labels", "42"], ["42"]),
    (
        "predict-label-outside-scored-batches",  # only the first two batches (16 inputs) are scored
        ["predict", "--ckpt_path", "{ckpt}", "--scores.anomalous_labels", "[0,1,2,3,4,5,6,7,8,9]"],
        ["anomalous_labels", "only"],
    ),
    (
        "fit-batch-larger-than-split",
        [*FIT, "--data.init_args.batch_size", "500"],
        ["batch_size=500", "160 training examples"],
    ),
    (
        "fit-val-interval-beyond-epoch",
        [*FIT, "--trainer.val_check_interval", "50"],
        ["val_check_interval=50", "20 training batches"],
    ),
]


@pytest.mark.parametrize("case, argv, words", REFUSED, ids=[c[0] for c in REFUSED])
def test_a_refusal_known_before_the_run_leaves_the_finished_run_untouched(case, argv, words, finished, calm, capsys):
    before = snapshot(finished["base"])
    code, err = vae(capsys, *(a.format(**finished) for a in argv))
    assert code == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("vae: error:") and "Traceback" not in err, err[-2000:]
    assert all(w in lines[-1] for w in words), lines[-1]
    assert snapshot(finished["base"]) == before, "the refused command changed or added files"
