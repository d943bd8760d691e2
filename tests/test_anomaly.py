"""Anomaly scoring: a VAE trained on MNIST digits 0–8 scores held-out 9s as more anomalous."""

import csv

import pytest
import torch
from conftest import run_vae, write_mnist_raw


@pytest.mark.slow
def test_held_out_nines_score_as_more_anomalous_than_held_out_digits_0_to_8(mnist_test_split, tmp_path):
    from torchmetrics.classification import BinaryAUROC

    x, y = mnist_test_split  # the real MNIST test split: 10,000 digits
    train = (y[:9000] != 9).nonzero().squeeze(1)  # no 9s to learn from
    images, labels = torch.cat([x[:9000][train], x[9000:]]), torch.cat([y[:9000][train], y[9000:]])
    root = write_mnist_raw(tmp_path, "MNIST", images, labels, n_train=len(train))
    common = [
        "--config", "configs/base.yaml", "--config", "configs/mnist/vae.yaml",
        "--model.init_args.encoder", "vae_lightning.MLPEncoder", "--model.init_args.decoder", "vae_lightning.MLPDecoder",
        "--data.init_args.data_dir", str(root), "--data.init_args.val_size", "500",
        "--trainer.default_root_dir", str(tmp_path / "run"), "--images.every_n_val", "0",
    ]
    r = run_vae("fit", *common, "--trainer.max_steps", "300", "--trainer.val_check_interval", "150")
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "scores.csv"
    r = run_vae("predict", *common, "--ckpt_path", str(tmp_path / "run/checkpoints/last.ckpt"),
                "--model.init_args.iw_samples", "20", "--scores.path", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    assert [int(row["label"]) for row in rows] == labels[len(train):].tolist()  # one row per test input, in order
    is_nine = torch.tensor([int(row["label"]) == 9 for row in rows])
    for score in ("nll_iw", "neg_elbo"):
        s = torch.tensor([float(row[score]) for row in rows])
        s = (s - s.min()) / (s.max() - s.min())  # into [0, 1]: BinaryAUROC would squash nats with a sigmoid
        auroc = BinaryAUROC()(s, is_nine.long())
        assert auroc > 0.6, f"{score}: AUROC {auroc:.3f}"
