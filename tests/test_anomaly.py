"""Anomaly scoring on MNIST: a VAE trained briefly on digits 0–8 scores the held-out test split
(with 9s) through `vae predict`."""

import csv

import pytest
import torch
from conftest import run_vae, write_mnist_raw

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scored(mnist_test_split, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("anomaly")
    x, y = mnist_test_split  # the real MNIST test split: 10,000 digits
    train = (y[:9000] != 9).nonzero().squeeze(1)  # no 9s to learn from
    images, labels = torch.cat([x[:9000][train], x[9000:]]), torch.cat([y[:9000][train], y[9000:]])
    root = write_mnist_raw(tmp, "MNIST", images, labels, n_train=len(train))
    common = [
        "--config", "configs/base.yaml", "--config", "configs/mnist/vae.yaml",
        "--model.init_args.encoder", "vae_lightning.MLPEncoder", "--model.init_args.decoder", "vae_lightning.MLPDecoder",
        "--data.init_args.data_dir", str(root), "--data.init_args.val_size", "500",
        "--trainer.default_root_dir", str(tmp / "run"), "--images.every_n_val", "0",
    ]
    r = run_vae("fit", *common, "--trainer.max_steps", "300", "--trainer.val_check_interval", "150")
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp / "scores.csv"
    r = run_vae("predict", *common, "--ckpt_path", "last",
                "--model.init_args.iw_samples", "20", "--scores.path", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return list(csv.DictReader(out.open())), labels[len(train):]


def auroc(rows, score: str) -> float:
    from torchmetrics.classification import BinaryAUROC

    s = torch.tensor([float(row[score]) for row in rows])
    s = (s - s.min()) / (s.max() - s.min())  # into [0, 1]: BinaryAUROC would squash nats with a sigmoid
    return BinaryAUROC()(s, torch.tensor([int(row["label"]) == 9 for row in rows]).long()).item()


def test_predict_writes_one_row_of_scores_per_test_digit_in_order(scored):
    rows, labels = scored
    assert [int(row["label"]) for row in rows] == labels.tolist()
    nll, neg_elbo = (torch.tensor([float(row[k]) for row in rows]) for k in ("nll_iw", "neg_elbo"))
    assert nll.isfinite().all() and nll.mean() < neg_elbo.mean()  # the IW bound is the tighter one
    assert 0 <= auroc(rows, "nll_iw") <= 1


@pytest.mark.xfail(strict=True, reason=(
    "Likelihood favours simple images: after 300 steps 9s score as LESS anomalous than 0-8 (AUROC "
    "~0.39; ~0.49 after 1,000 steps, ~0.53 after 2,000; An & Cho 2015 report ~0.5 for digit 9)."))
def test_held_out_nines_score_as_more_anomalous_than_held_out_digits_0_to_8(scored):
    rows, _ = scored
    assert auroc(rows, "nll_iw") > 0.6
