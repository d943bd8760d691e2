"""Using a trained model (issue 15): `vae encode`, `vae sample` data sets, anomaly decisions in
`vae predict`, the Python API, and a console free of other libraries' noise. One short MNIST
fit (real digits, a tiny MLP VAE) serves every test."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import REPO, TINY_MODEL, run_vae

pytestmark = pytest.mark.slow

MODEL = TINY_MODEL[2:]  # the tiny nets, for any model class
CONFIGS = ["--config", "configs/base.yaml", "--config", "configs/mnist/vae.yaml"]
NOISE = (
    "Tip: For seamless cloud logging",  # Lightning's litlogger advert
    "LeafSpec",  # a torch deprecation warning raised inside Lightning
    "anonymous setting has no effect",  # W&B, for the setting Lightning's WandbLogger passes
    "`srun` command is available",  # Lightning, whenever srun is on the PATH
)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, mnist_dir):
    """A 20-step fit with an `srun` on the PATH (as on a SLURM login node): (run folder, data flags, stderr)."""
    tmp = tmp_path_factory.mktemp("use")
    (tmp / "bin").mkdir()
    (tmp / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp / "bin" / "srun").chmod(0o755)
    data = ["--data.init_args.data_dir", str(mnist_dir), "--data.init_args.val_size", "300"]
    env = {"PATH": f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}", "VAE_DEBUG": ""}
    r = run_vae(
        "fit",
        *CONFIGS,
        *MODEL,
        *data,
        "--trainer.max_steps",
        "20",
        "--trainer.val_check_interval",
        "10",
        "--trainer.default_root_dir",
        str(tmp / "run"),
        "--images.every_n_val",
        "0",
        env=env,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp / "run", data, r.stderr


@pytest.fixture(scope="module")
def ckpt(fitted):
    return str(fitted[0] / "checkpoints" / "version_0" / "last.ckpt")


@pytest.fixture(scope="module")
def model(ckpt):
    from vae_lightning import load_model  # the public API

    return load_model(ckpt)


def mnist(mnist_dir, stage: str):
    from vae_lightning.data import MNISTDataModule

    dm = MNISTDataModule(data_dir=str(mnist_dir), val_size=300)
    dm.setup(stage)
    return dm


# ---- a quiet console -------------------------------------------------------------------------


def test_a_short_fit_prints_none_of_the_other_libraries_noise(fitted):
    stderr = fitted[2]
    assert "Total params" in stderr  # the model summary is still there
    for message in NOISE:
        assert message not in stderr, message


FILTER_SCRIPT = """
import logging, warnings
from vae_lightning.cli import console
console.quiet()
logging.basicConfig(format="%(message)s")
warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use isinstance(treespec, TreeSpec)", UserWarning)
warnings.warn("The `srun` command is available on your system but is not used. HINT: prepend srun", UserWarning)
warnings.warn("a warning of our own", UserWarning)
log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
log.setLevel(logging.INFO)
log.info("Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
log.info("an info line that stays")
"""


@pytest.mark.parametrize("debug", ["", "1"])
def test_filters_drop_only_the_named_messages_and_vae_debug_shows_everything(debug):
    env = {**os.environ, "PYTHONPATH": str(REPO), "VAE_DEBUG": debug}
    r = subprocess.run([sys.executable, "-c", FILTER_SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "a warning of our own" in r.stderr and "an info line that stays" in r.stderr
    for message in ("LeafSpec", "`srun` command", "seamless cloud logging"):
        assert (message in r.stderr) == bool(debug), (message, r.stderr)


def test_help_texts_carry_no_rst_markup():
    for args in (["slurm", "submit", "--help"], ["fit", "--model.help", "vae_lightning.VAE"], ["sample", "--help"]):
        r = run_vae(*args)
        assert r.returncode == 0 and "usage" in r.stdout, r.stderr[-2000:]
        assert "``" not in r.stdout and ":class:" not in r.stdout, args


# ---- the Python API ----------------------------------------------------------------------------


def test_python_api_shapes_units_and_agreement_with_the_forward_record(model, mnist_dir):
    x = mnist(mnist_dir, "test").test_source.images[:64].float() / 255  # fixed binarization: {0, 1}
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (64, 4) and mu.dtype == torch.float32
    record = model(x)  # one ELBO sample: the forward record
    torch.testing.assert_close(mu, record.mu.float())
    torch.testing.assert_close(model.reconstruct(x), model.decode(mu))
    assert model.decode(mu).shape == (64, 1, 28, 28) and 0 <= model.decode(mu).min() <= model.decode(mu).max() <= 1
    a = model.sample(8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, model.sample(8, generator=torch.Generator().manual_seed(1)))
    drawn = model.sample(8, generator=torch.Generator().manual_seed(1), draw=True)
    assert set(drawn.unique().tolist()) <= {0.0, 1.0}  # Bernoulli draws are binary images
    cold = model.sample(8, generator=torch.Generator().manual_seed(1), temperature=1e-6)
    torch.testing.assert_close(cold, model.decode(torch.zeros(8, 4)).expand_as(cold), atol=1e-4, rtol=0)
    ll = model.log_likelihood(x, k=50)
    assert ll.shape == (64,) and ll.isfinite().all() and (ll < 0).all()  # log-mass of binary images, in nats
    assert ll.mean() > -(record.recon + record.kl).mean()  # the IW bound is tighter than the ELBO on average


# ---- vae encode --------------------------------------------------------------------------------


def test_encode_writes_the_encoders_mu_in_data_order_with_labels(fitted, ckpt, model, mnist_dir, tmp_path):
    out = tmp_path / "latents.npz"
    r = run_vae("encode", ckpt, *CONFIGS, *fitted[1], "--split", "test", "--out", str(out), "--sample")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = np.load(out)
    source = mnist(mnist_dir, "test").test_source
    mu, logvar = model.encode(source.images.float() / 255)
    assert rows["index"].tolist() == list(range(1000))
    assert rows["label"].tolist() == source.targets.tolist()  # row i is input i of the split
    torch.testing.assert_close(torch.from_numpy(rows["mu"]), mu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(rows["logvar"]), logvar, rtol=1e-4, atol=1e-5)
    z = (torch.from_numpy(rows["z"]) - mu) / (0.5 * logvar).exp()  # a draw from q(z|x): standard normal noise
    assert z.shape == (1000, 4) and abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latents.npz"]


def test_encode_the_validation_split_as_pt(fitted, ckpt, model, mnist_dir, tmp_path):
    out = tmp_path / "val.pt"
    r = run_vae("encode", ckpt, *CONFIGS, *fitted[1], "--split", "val", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = torch.load(out)
    dm = mnist(mnist_dir, "fit")
    x, y = dm.val_source[dm.val_idx]
    assert set(rows) == {"index", "mu", "logvar", "label"} and torch.equal(rows["label"], y)
    torch.testing.assert_close(rows["mu"], model.encode(x)[0], rtol=1e-4, atol=1e-5)


# ---- vae sample for data sets ------------------------------------------------------------------


def test_sampled_png_folder_feeds_image_folder_data_module_unchanged(ckpt, model, tmp_path):
    from vae_lightning.cli.generate import _chunks
    from vae_lightning.data import ImageFolderDataModule

    out = tmp_path / "generated"
    r = run_vae("sample", ckpt, "--num", "20", "--out", str(out), "--draw", "--seed", "3", "--batch-size", "8")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir())[:2] == ["000000.png", "000001.png"] and len(list(out.iterdir())) == 20
    expected = torch.cat([images for _, _, images in _chunks(model, 20, 3, 1.0, True, 8)]).float() / 255
    dm = ImageFolderDataModule(data_dir=str(out), image_size=28, channels=1, val_size=0, num_workers=0)
    dm.setup("fit")
    x = torch.cat([batch[0] for batch in dm.split_loader("train")])
    assert torch.equal(x, expected[dm.train_set.indices])  # the files hold exactly the samples, in name order
    assert set(x.unique().tolist()) == {0.0, 1.0}  # --draw on a Bernoulli model: binary images
    r = run_vae(
        "sample", ckpt, "--num", "20", "--out", str(tmp_path / "g.npz"), "--draw", "--seed", "3", "--batch-size", "8"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    arrays = np.load(tmp_path / "g.npz")
    assert torch.equal(torch.from_numpy(arrays["images"]).float() / 255, expected)  # the same seeded samples
    assert arrays["z"].shape == (20, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz", "generated"]


@pytest.mark.parametrize("writer", ["write_pngs", "write_npz"])
def test_a_stopped_sample_run_leaves_nothing_that_looks_complete(model, tmp_path, monkeypatch, writer):
    from vae_lightning.cli import generate

    calls = []
    real = model.decode

    def decode_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second chunk
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "decode", decode_then_stop)
    out = tmp_path / ("out" if writer == "write_pngs" else "out.npz")
    with pytest.raises(KeyboardInterrupt):
        getattr(generate, writer)(model, out, num=10, batch_size=4)
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []


# ---- anomaly decisions -------------------------------------------------------------------------


def test_threshold_at_fpr_flags_the_target_share_of_normal_scores():
    from vae_lightning.evaluation.decisions import auroc, threshold_at_fpr

    normal = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    for fpr in (0.01, 0.05, 0.5):
        t = threshold_at_fpr(normal, fpr)
        assert (normal > t).sum() == int(fpr * 1000)  # at most a share fpr above, and no lower order statistic does
    anomalies = normal[:300] + 1.0
    s, positive = torch.cat([normal, anomalies]), torch.arange(1300) >= 1000
    brute = (anomalies.view(-1, 1) > normal.view(1, -1)).double().mean()  # P(anomaly scores above a normal input)
    assert auroc(s, positive) == pytest.approx(brute.item(), abs=1e-9)


def test_predict_flags_at_a_false_positive_rate_and_reports_auroc(fitted, ckpt, tmp_path):
    out = tmp_path / "scores.csv"
    r = run_vae(
        "predict",
        *CONFIGS,
        *MODEL,
        *fitted[1],
        "--trainer.default_root_dir",
        str(tmp_path),
        "--ckpt_path",
        ckpt,
        "--model.init_args.iw_samples",
        "5",
        "--scores.path",
        str(out),
        "--scores.fpr",
        "0.1",
        "--scores.anomalous_labels",
        "9",
        "--scores.score",
        "nll_iw",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows, decision = list(csv.DictReader(out.open())), json.loads(out.with_suffix(".json").read_text())
    assert decision["score"] == "nll_iw" and decision["target_fpr"] == 0.1 and decision["val_inputs"] == 300
    score = torch.tensor([float(row["nll_iw"]) for row in rows])
    flags = torch.tensor([row["flag"] == "1" for row in rows])
    assert torch.equal(flags, score > decision["threshold"])
    nine = torch.tensor([row["label"] == "9" for row in rows])
    assert decision["anomalies"] == int(nine.sum()) > 0
    assert decision["tpr"] == pytest.approx(flags[nine].double().mean().item())
    assert decision["fpr"] == pytest.approx(flags[~nine].double().mean().item())
    assert decision["fpr"] < 0.25  # the test digits are like the validation digits the threshold was fit to
    from vae_lightning.evaluation.decisions import auroc

    assert decision["auroc"] == pytest.approx(auroc(score, nine), abs=1e-3)


# ---- bad input: one sentence, exit status 2, no output -----------------------------------------

BAD = {
    "sample --num 0": (["sample", "{ckpt}", "--num", "0", "--out", "{tmp}/set"], "--num"),
    "sample grid under a file": (["sample", "{ckpt}", "--out", "{file}/sub/s.png"], "--out"),
    "sample PNG folder under a file": (["sample", "{ckpt}", "--out", "{file}/sub/set"], "--out"),
    "sample npz under a file": (["sample", "{ckpt}", "--out", "{file}/sub/s.npz"], "--out"),
    "sample npz format, png extension": (
        ["sample", "{ckpt}", "--format", "npz", "--out", "{tmp}/s.png"],
        "--format npz",
    ),
    "sample png format, npz extension": (
        ["sample", "{ckpt}", "--format", "png", "--out", "{tmp}/s.npz"],
        "--format png",
    ),
    "sample grid format, a folder": (["sample", "{ckpt}", "--format", "grid", "--out", "{tmp}/set"], "--format grid"),
    "sample unknown extension": (["sample", "{ckpt}", "--out", "{tmp}/s.jpg"], "--out"),
    "sample temperature 0": (["sample", "{ckpt}", "--temperature", "0", "--out", "{tmp}/s.png"], "--temperature"),
    "encode under a file": (["encode", "{ckpt}", "{data}", "--out", "{file}/sub/l.npz"], "--out"),
    "encode unknown extension": (["encode", "{ckpt}", "{data}", "--out", "{tmp}/l.csv"], "--out"),
    "encode a split the data lacks": (
        ["encode", "{ckpt}", "{data}", "--data.init_args.val_size", "0", "--split", "val", "--out", "{tmp}/l.npz"],
        "--split val",
    ),
    "encode an unknown split": (["encode", "{ckpt}", "{data}", "--split", "dev", "--out", "{tmp}/l.npz"], "--split"),
    "predict scores under a file": (["predict", "{predict}", "--scores.path", "{file}/sub/s.csv"], "scores.path"),
    "predict fpr 1.5": (["predict", "{predict}", "--scores.path", "{tmp}/s.csv", "--scores.fpr", "1.5"], "scores.fpr"),
    "predict fpr 0": (["predict", "{predict}", "--scores.path", "{tmp}/s.csv", "--scores.fpr", "0"], "scores.fpr"),
    "predict a label absent from the data": (
        ["predict", "{predict}", "--scores.path", "{tmp}/s.csv", "--scores.anomalous_labels", "42"],
        "anomalous_labels",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_gets_one_sentence_exit_2_and_no_output(case, fitted, ckpt, tmp_path):
    template, word = BAD[case]
    blocker = tmp_path / "file"  # runs as root: only a path under a regular file is unwritable
    blocker.write_text("")
    data = [*CONFIGS, *fitted[1]]
    predict = [
        *data,
        *MODEL,
        "--trainer.default_root_dir",
        str(tmp_path / "root"),
        "--ckpt_path",
        ckpt,
        "--model.init_args.iw_samples",
        "2",
        "--scores.background_images",
        "1000",
    ]
    groups = {"{data}": data, "{predict}": predict}
    args = []
    for a in template:
        args += groups[a] if a in groups else [a.format(ckpt=ckpt, tmp=tmp_path, file=blocker)]
    r = run_vae(*args)
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("vae: error: ") and word in last, r.stderr[-2000:]
    root = tmp_path / "root"  # vae predict's run folder (its logger may start there)
    made = [p for p in tmp_path.rglob("*") if p not in (blocker, root) and root not in p.parents]
    assert made == [] and not list(tmp_path.rglob("s.csv")) and not list(tmp_path.rglob("s.json")), made


def test_sample_gives_means_unless_draw_is_asked_for():
    from vae_lightning.cli.pictures import _parser

    parse = _parser("sample").parse_args
    assert [parse(["c.ckpt", *flags]).draw for flags in ([], ["--mean"], ["--draw"])] == [False, False, True]
