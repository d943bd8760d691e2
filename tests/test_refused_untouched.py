"""Refused means untouched (issue 26): a command refused for a reason that can be known before
the run (missing data, labels the split does not have, a batch larger than the data) is refused
before any logger or record writes, so the folders of a finished run keep every byte; and
accepted inputs give the result they ask for. Runs in-process through `vae_lightning.cli.main`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import yaml

from helpers import vae, write_mnist_raw
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


def snapshot(root: Path) -> dict[str, str]:
    """Every file's hash and every folder under ``root`` (a refused run leaves no empty folder either)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir" for p in root.rglob("*")}


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
        "test-model-override-cannot-apply",
        ["test", "--ckpt_path", "{ckpt}", "--model.init_args.lr_interval", "epoch"],
        ["--model.init_args.lr_interval epoch", "its lr_interval is step", "iw_samples"],
    ),
    (  # the class as typed, not jsonargparse's Namespace of its arguments
        "test-class-override-cannot-apply",
        ["test", "--ckpt_path", "{ckpt}", "--model.init_args.kl_schedule", "vae_lightning.LinearWarmup"],
        ["kl_schedule vae_lightning.LinearWarmup cannot apply", "its kl_schedule is None"],
    ),
    (
        "validate-nested-override-cannot-apply",
        ["validate", "--ckpt_path", "{ckpt}", "--model.encoder.init_args.hidden", "[8]"],
        ["encoder.init_args.hidden", "[16]"],
    ),
    (
        "fit-batch-larger-than-split",
        [*FIT, "--data.init_args.batch_size", "500"],
        ["batch_size=500", "160 training examples"],
    ),
    (  # the refusal comes after the version folder was claimed: none of the folders it made stays
        "fit-fresh-root-batch-larger-than-split",
        [
            "fit",
            "--config",
            "{config}",
            "--trainer.default_root_dir",
            "{base}/fresh/run",
            "--data.init_args.batch_size",
            "500",
        ],
        ["batch_size=500"],
    ),
    (
        "fit-fresh-root-refused-when-built",
        [*FIT[:3], "--trainer.default_root_dir", "{base}/fresh", "--model.init_args.encoder.init_args.hidden", "[0]"],
        ["MLPEncoder hidden", ">= 1"],
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
    assert len(lines) == 1 and lines[0].startswith("vae: error:") and "Traceback" not in err, err[-2000:]
    assert all(w in lines[0] for w in words) and "Namespace(" not in lines[0], lines[0]
    assert snapshot(finished["base"]) == before, "the refused command changed or added files"


# ---- accepted, but wrong or empty ----------------------------------------------------------------

PICTURES = [
    ("sample-temperature-inf", ["sample", "{ckpt}", "--temperature", "inf", "--out", "{base}/s.png"], ["inf"]),
    ("sample-temperature-nan", ["sample", "{ckpt}", "--temperature", "nan", "--out", "{base}/s.npz"], ["nan"]),
    ("traverse-span-nan", ["traverse", "{ckpt}", "--span", "nan", "--out", "{base}/t.png"], ["--span", "nan"]),
    ("traverse-span-inf", ["traverse", "{ckpt}", "--span", "inf", "--out", "{base}/t.png"], ["--span", "inf"]),
    (
        "sample-device-no-cuda",
        ["sample", "{ckpt}", "--device", "cuda", "--out", "{base}/s.png"],
        ["--device cuda", "no CUDA GPU"],
    ),
    ("encode-device-no-cuda", ["encode", "{ckpt}", "--device", "cuda:0", "--out", "{base}/e.npz"], ["no CUDA GPU"]),
    ("traverse-device-unknown", ["traverse", "{ckpt}", "--device", "gpu0", "--out", "{base}/t.png"], ["gpu0"]),
]


@pytest.mark.parametrize("case, argv, words", PICTURES, ids=[c[0] for c in PICTURES])
def test_a_picture_option_that_gives_blank_output_is_refused(case, argv, words, finished, calm, capsys):
    if "cuda" in case and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    before = snapshot(finished["base"])
    code, err = vae(capsys, *(a.format(**finished) for a in argv))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vae: error:"), err[-2000:]
    assert all(w in lines[0] for w in words), lines[0]
    assert snapshot(finished["base"]) == before


@pytest.fixture(scope="module")
def vamp_ckpt(finished) -> Path:
    root = finished["base"] / "vamp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setattr("sys.argv", ["vae"])
        mp.chdir(finished["base"])
        main(
            [
                *("fit", "--config", str(finished["config"]), "--trainer.default_root_dir", str(root)),
                *("--trainer.logger", "false", "--model.init_args.prior", "vae_lightning.VampPrior"),
                *("--model.init_args.prior.init_args.num_components", "3"),
            ]
        )
    return root / "checkpoints" / "version_0" / "last.ckpt"


def test_every_sampling_path_draws_from_a_learned_prior(vamp_ckpt, finished, calm, capsys):
    """`vae sample` to .npz and to a folder of PNGs decode z ~ the VampPrior, not z ~ N(0, I):
    the saved z are the prior's seeded draws, and the folder holds the same images."""
    import numpy as np
    from PIL import Image

    from vae_lightning.runtime.checkpoint import load_model

    base = finished["base"]
    assert vae(capsys, "sample", str(vamp_ckpt), "--num", "6", "--seed", "3", "--out", str(base / "v.npz"))[0] == 0
    assert vae(capsys, "sample", str(vamp_ckpt), "--num", "6", "--seed", "3", "--out", str(base / "vdir"))[0] == 0
    saved = np.load(base / "v.npz")
    model = load_model(vamp_ckpt)
    expected = model.prior.sample(6, torch.Generator().manual_seed(3))
    standard = torch.randn(6, model.latent_dim, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(torch.from_numpy(saved["z"]), expected.float(), atol=1e-6)
    assert not torch.allclose(torch.from_numpy(saved["z"]), standard, atol=1e-3)
    pngs = sorted((base / "vdir").iterdir())
    assert len(pngs) == 6
    assert all((np.asarray(Image.open(p)) == saved["images"][i, 0]).all() for i, p in enumerate(pngs))
    code, err = vae(capsys, "sample", str(vamp_ckpt), "--temperature", "2", "--out", str(base / "t.npz"))
    assert code == 2 and "--temperature" in err and "VampPrior" in err and not (base / "t.npz").exists()


LIMITS = [f"trainer.limit_{s}_batches" for s in ("train", "val", "test", "predict")]


@pytest.mark.parametrize(
    "key, value",
    [(k, v) for k in LIMITS for v in ("1", "2", "1.0", "0.5", "0")]
    + [("trainer.val_check_interval", v) for v in ("3", "1.0", "0.25")],
)
def test_batch_counts_stay_integers_through_the_saved_config(key, value, finished, calm, tmp_path):
    """`limit_test_batches: 1` is one batch and 1.0 all of them (Lightning): the parsed config,
    the trainer and a run re-created from the saved vae_config.yaml all keep the type given."""
    from vae_lightning.cli.lightning import VAECLI, plain_config

    given = yaml.safe_load(value)
    flag = ["--config", str(finished["config"]), "--trainer.logger", "false", f"--{key}", value]
    first = VAECLI(args=flag, run=False)
    saved = plain_config(first.parser, first.config)
    saved.pop("config", None)
    section, name = key.split(".")
    assert type(saved[section][name]) is type(given) and saved[section][name] == given
    path = tmp_path / "vae_config.yaml"
    path.write_text(yaml.safe_dump(saved, sort_keys=False))  # what LogConfig writes
    again = VAECLI(args=["--config", str(path)], run=False)
    assert type(again.config.trainer[name]) is type(given) and again.config.trainer[name] == given
    assert type(getattr(again.trainer, name)) is type(given)


@pytest.mark.parametrize(
    "array, words",
    [
        ("model.init_args.beta=1,4,1", ["'1' is given twice"]),
        ("model.init_args.beta=1,,4", ["KEY=V1,V2"]),
        ("model.init_args.beta=1,4,", ["KEY=V1,V2"]),
        ("model.init_args.latnet_dim=4,8", ["model.init_args.latnet_dim", "did you mean latent_dim"]),
        ("model.init_args.latent_dim=4,x", ["model.init_args.latent_dim=x", "integer"]),
    ],
)
def test_a_grid_whose_tasks_would_share_a_folder_or_lose_a_value_is_refused(
    array, words, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"
    code, err = vae(capsys, "slurm", "submit", "--config", str(config), "--dry-run", "--array", array)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and all(w in lines[0] for w in words), err
    assert list(tmp_path.iterdir()) == []


# ---- tracebacks instead of a line: bad numbers, paths and files (in-process, nothing written) ------

BAD = [
    ("sample --seed", ["sample", "{ckpt}", "--seed", str(2**64), "--out", "{base}/s.png"], ["--seed"]),
    ("sample --num grid", ["sample", "{ckpt}", "--num", "100000000", "--out", "{base}/s.png"], ["--num"]),
    ("sample --num npz", ["sample", "{ckpt}", "--num", str(10**13), "--out", "{base}/s.npz"], ["GB"]),
    ("traverse --steps", ["traverse", "{ckpt}", "--steps", "100000000", "--out", "{base}/t.png"], ["--steps"]),
    ("interpolate --rows", ["interpolate", "{ckpt}", "--rows", "100000000", "--out", "{base}/t.png"], ["--rows"]),
    ("encode --seed", ["encode", "{ckpt}", "--seed", "-1", "--out", "{base}/e.npz"], ["--seed"]),
    ("prepare --val-size inf", ["data", "prepare", "{base}/data", "{base}/p", "--val-size", "inf"], ["--val-size"]),
    ("prepare --val-size 2.5", ["data", "prepare", "{base}/data", "{base}/p", "--val-size", "2.5"], ["--val-size"]),
    ("prepare --crop", ["data", "prepare", "{base}/data", "{base}/p", "--crop", "-3"], ["--crop"]),
    ("prepare --image-size", ["data", "prepare", "{base}/data", "{base}/p", "--image-size", "99999"], ["--image"]),
    ("prepare --seed", ["data", "prepare", "{base}/data", "{base}/p", "--seed", str(2**70)], ["--seed"]),
    ("prepare --chunk-bytes", ["data", "prepare", "{base}/data", "{base}/p", "--chunk-bytes", "lots"], ["chunk"]),
    ("slurm binary yaml", ["slurm", "submit", "--config", "{base}/bin.yaml", "--dry-run"], ["bin.yaml", "text"]),
    ("slurm broken yaml", ["slurm", "submit", "--config", "{base}/broken.yaml", "--dry-run"], ["not valid YAML"]),
    ("slurm list yaml", ["slurm", "submit", "--config", "{base}/list.yaml", "--dry-run"], ["mapping"]),
    ("fit binary yaml", ["fit", "--config", "{base}/bin.yaml"], ["bin.yaml", "text"]),
    ("encode --model other", ["encode", "{ckpt}", "--model.init_args.latent_dim", "8"], ["latent_dim is 4"]),
    ("encode --model unknown", ["encode", "{ckpt}", "--model.init_args.beta", "4"], ["beta", "not a setting"]),
    ("encode --model class", ["encode", "{ckpt}", "--model", "vae_lightning.BetaVAE"], ["class is vae_lightning.VAE"]),
    ("encode --trainer", ["encode", "{ckpt}", "--trainer.max_steps", "3"], ["--trainer.max_steps", "no trainer"]),
    ("encode binary yaml", ["encode", "{ckpt}", "--config", "{base}/bin.yaml", "--out", "{base}/e.npz"], ["bin.yaml"]),
]


# one row per option of each command that takes a number, a path or a name (the rows above cover a few)
PREPARE = ["data", "prepare", "{base}/data", "{base}/p"]
SAMPLE, TRAVERSE, INTERPOLATE = (["sample", "{ckpt}"], ["traverse", "{ckpt}"], ["interpolate", "{ckpt}"])
ENCODE = ["encode", "{ckpt}"]
PREDICT = ["predict", "--ckpt_path", "{ckpt}"]
SLURM = ["slurm", "submit", "--config", "{config}", "--dry-run"]
STUDY = ["{base}/study.yaml"]
BAD += [
    ("prepare --image-size type", [*PREPARE, "--image-size", "abc"], ["--image-size", "invalid int value"]),
    ("prepare --channels", [*PREPARE, "--channels", "2"], ["--channels", "choose from 1, 3"]),
    ("prepare --kind", [*PREPARE, "--kind", "nope"], ["--kind", "'nope'"]),
    ("prepare --num-workers", [*PREPARE, "--num-workers", "0"], ["--num-workers", ">= 1"]),
    ("prepare --val-size nan", [*PREPARE, "--val-size", "nan"], ["--val-size", "nan"]),
    ("prepare --val-size -1", [*PREPARE, "--val-size", "-1"], ["--val-size"]),
    ("prepare --crop 0", [*PREPARE, "--crop", "0"], ["--crop", "between 1 and 4096"]),
    ("prepare --chunk-bytes 0", [*PREPARE, "--chunk-bytes", "0"], ["--chunk-bytes"]),
    ("prepare SRC missing", ["data", "prepare", "{base}/nothing", "{base}/p"], ["SRC", "not a folder"]),
    ("prepare DST the run", ["data", "prepare", "{base}/data", "{root}"], ["DST", "already exists"]),
    ("sample --num 0", [*SAMPLE, "--num", "0", "--out", "{base}/s.png"], ["--num", ">= 1"]),
    ("sample --nrow 0", [*SAMPLE, "--nrow", "0", "--out", "{base}/s.png"], ["--nrow", ">= 1"]),
    ("sample --batch-size", [*SAMPLE, "--batch-size", "-1", "--out", "{base}/s.npz"], ["--batch-size", "-1"]),
    ("sample --temperature", [*SAMPLE, "--temperature", "0", "--out", "{base}/s.png"], ["--temperature", "> 0"]),
    ("sample --format", [*SAMPLE, "--format", "jpg", "--out", "{base}/s.png"], ["--format", "'jpg'"]),
    ("sample --out .jpg", [*SAMPLE, "--out", "{base}/s.jpg"], ["--out", ".png or .npz"]),
    ("sample CKPT missing", ["sample", "{base}/nope.ckpt", "--out", "{base}/s.png"], ["nope.ckpt", "does not exist"]),
    # was "truncated or corrupt": the one loader of every command that takes a checkpoint says what it is
    ("sample CKPT a YAML", ["sample", "{config}", "--out", "{base}/s.png"], ["tiny.yaml", "YAML/text file, not a"]),
    ("traverse CKPT a YAML", ["traverse", "{config}", "--out", "{base}/t.png"], ["tiny.yaml", "not a checkpoint"]),
    ("interpolate CKPT a YAML", ["interpolate", "{config}", "--out", "{base}/i.png"], ["YAML/text file"]),
    ("encode CKPT a YAML", ["encode", "{config}", "--out", "{base}/e.npz"], ["tiny.yaml", "not a checkpoint"]),
    ("sample CKPT binary", ["sample", "{base}/bin.yaml", "--out", "{base}/s.png"], ["torch.save did not write"]),
    ("test --ckpt_path a YAML", ["test", "--ckpt_path", "{config}"], ["tiny.yaml", "not a checkpoint (.ckpt)"]),
    ("traverse --dims", [*TRAVERSE, "--dims", "0", "--out", "{base}/t.png"], ["--dims >= 1"]),
    ("traverse --steps 1", [*TRAVERSE, "--steps", "1", "--out", "{base}/t.png"], ["--steps >= 2"]),
    ("traverse --span", [*TRAVERSE, "--span", "-1", "--out", "{base}/t.png"], ["--span > 0"]),
    ("traverse --group", [*TRAVERSE, "--group", "3", "--out", "{base}/t.png"], ["--group 3", "one group"]),
    ("traverse --image", [*TRAVERSE, "--image", "{base}/no.png", "--out", "{base}/t.png"], ["no.png"]),
    ("traverse --seed", [*TRAVERSE, "--seed", "-1", "--out", "{base}/t.png"], ["--seed", "-1"]),
    ("interpolate --steps", [*INTERPOLATE, "--steps", "1", "--out", "{base}/i.png"], ["--steps", ">= 2"]),
    ("interpolate --images one", [*INTERPOLATE, "--images", "{config}", "--out", "{base}/i.png"], ["pairs"]),
    ("interpolate --images missing", [*INTERPOLATE, "--images", "{base}/a.png", "{base}/b.png"], ["a.png"]),
    ("interpolate --seed", [*INTERPOLATE, "--seed", "-5", "--out", "{base}/i.png"], ["--seed", "-5"]),
    ("encode --split", [*ENCODE, "--split", "dev", "--out", "{base}/e.npz"], ["--split", "'dev'"]),
    ("encode --group", [*ENCODE, "--group", "2", "--out", "{base}/e.npz"], ["--group 2"]),
    ("encode --out .csv", [*ENCODE, "--out", "{base}/e.csv"], ["--out", ".npz or .pt"]),
    ("encode --config missing", [*ENCODE, "--config", "{base}/no.yaml", "--out", "{base}/e.npz"], ["no.yaml"]),
    ("encode --data", [*ENCODE, "--data.init_args.batch_size", "-1", "--out", "{base}/e.npz"], ["batch_size", "-1"]),
    ("encode --device", [*ENCODE, "--device", "gpu7", "--out", "{base}/e.npz"], ["--device", "gpu7"]),
    ("predict --scores.path", [*PREDICT, "--scores.path", "{base}/s.txt"], ["scores.path", ".csv"]),
    ("predict --scores.fpr", [*PREDICT, "--scores.fpr", "1.5"], ["1.5"]),
    ("predict --scores.score", [*PREDICT, "--scores.score", "nope"], ["scores.score", "'nope'"]),
    ("predict --scores.background", [*PREDICT, "--scores.background_images", "-1"], ["background_images", ">= 0"]),
    ("predict --scores.labels type", [*PREDICT, "--scores.anomalous_labels", "x"], ["anomalous_labels", "'x'"]),
    ("slurm --config missing", ["slurm", "submit", "--config", "{base}/no.yaml"], ["no.yaml", "not found"]),
    ("slurm --nodes", [*SLURM, "--nodes", "0"], ["--nodes", ">= 1"]),
    ("slurm --nodes type", [*SLURM, "--nodes", "x"], ["--nodes", "invalid int value"]),
    ("slurm --gpus-per-node", [*SLURM, "--gpus-per-node", "-1"], ["--gpus-per-node", ">= 0"]),
    ("slurm --ntasks-per-node", [*SLURM, "--gpus-per-node", "2", "--ntasks-per-node", "3"], ["must equal"]),
    ("slurm --cpus-per-task", [*SLURM, "--cpus-per-task", "0"], ["--cpus-per-task", ">= 1"]),
    ("slurm --seeds", [*SLURM, "--seeds", "0,x"], ["--seeds 0,x", "'x' is not a seed"]),
    # argparse took "-1,2" for an option ("expected one argument")
    ("slurm --seeds negative list", [*SLURM, "--seeds", "-1,2"], ["--seeds -1,2", "'-1'", "0 to 2**32 - 1"]),
    ("slurm --seeds= negative", [*SLURM, "--seeds=3,-1"], ["--seeds 3,-1", "'-1' is not a seed"]),
    ("slurm --study", [*SLURM, "--study", "../x"], ["--study", "folder name"]),
    ("slurm --time", [*SLURM, "--time", "1 day"], ["--time", "#SBATCH"]),
    ("slurm --job-name", [*SLURM, "--job-name", "a;b"], ["--job-name", "#SBATCH"]),
    ("slurm --array key", [*SLURM, "--array", "model.init_args.latnet_dim=4,8"], ["did you mean latent_dim"]),
    ("slurm -- fit flag", [*SLURM, "--", "--trainer.max_stpes", "3"], ["did you mean trainer.max_steps"]),
    ("study run FILE missing", ["study", "run", "{base}/no.yaml"], ["no.yaml", "not found"]),
    ("study run --only", ["study", "run", *STUDY, "--only", "abc"], ["--only", "'abc'"]),
    ("study run --root", ["study", "run", *STUDY, "--root", "{ckpt}"], ["--root", "last.ckpt"]),
    ("study run grid key", ["study", "run", "{base}/typo.yaml"], ["latnet_dim", "did you mean latent_dim"]),
    ("study run grid twice", ["study", "run", "{base}/twice.yaml"], ["latent_dim", "given twice"]),
    ("study submit --nodes", ["study", "submit", *STUDY, "--dry-run", "--nodes", "0"], ["--nodes", ">= 1"]),
    ("study submit --gpus_per_node", ["study", "submit", *STUDY, "--dry-run", "--gpus_per_node", "-1"], [">= 0"]),
    ("study submit --time", ["study", "submit", *STUDY, "--dry-run", "--time", "1 day"], ["--time", "#SBATCH"]),
    ("study status DIR missing", ["study", "status", "{base}/nothing"], ["nothing", "study.json"]),
    ("study status a file", ["study", "status", "{ckpt}"], ["last.ckpt", "study.json"]),
    ("compare PATH missing", ["compare", "{base}/nothing", "--out", "{base}/c"], ["nothing", "no such folder"]),
    ("compare --metrics", ["compare", "{root}", "--out", "{base}/c", "--metrics", "no/metric"], ["no/metric"]),
    ("compare --group-by", ["compare", "{root}", "--out", "{base}/c", "--group_by", "nope"], ["--group-by 'nope'"]),
    ("compare --study missing", ["compare", "--study", "{base}/nothing", "--out", "{base}/c"], ["--study"]),
    ("compare --out a file", ["compare", "{root}", "--out", "{ckpt}"], ["--out", "last.ckpt"]),
]

STUDY_FILE = "name: s\nseeds: [0]\nentries:\n  - name: a\n    config: [{config}]\n    grid: {{{grid}}}\n"


@pytest.mark.parametrize("case, argv, words", BAD, ids=[c[0] for c in BAD])
def test_a_bad_number_or_file_is_one_line_and_writes_nothing(case, argv, words, finished, calm, capsys):
    base = finished["base"]
    (base / "bin.yaml").write_bytes(b"\x89PNG\x00\xff\xfe binary")
    (base / "broken.yaml").write_text("a: [1,\n")
    (base / "list.yaml").write_text("- a\n- b\n")
    for name, grid in (("study", "model.init_args.latent_dim: [4]"), ("typo", "model.init_args.latnet_dim: [4, 8]")):
        (base / f"{name}.yaml").write_text(STUDY_FILE.format(config=finished["config"], grid=grid))
    (base / "twice.yaml").write_text(
        STUDY_FILE.format(config=finished["config"], grid="model.init_args.latent_dim: [4, 4]")
    )
    before = snapshot(base)
    code, err = vae(capsys, *(a.format(**finished) for a in argv))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vae: error:"), err[-2000:]
    assert all(w in lines[0] for w in words), lines[0]
    assert snapshot(base) == before


def test_encode_reads_the_data_block_of_the_checkpoints_saved_config(finished, calm, capsys, tmp_path):
    """`vae encode CKPT` alone finds the run's data as `vae test --ckpt_path CKPT` alone does."""
    import numpy as np

    out = tmp_path / "codes.npz"
    code, err = vae(capsys, "encode", str(finished["ckpt"]), "--split", "test", "--out", str(out))
    assert code == 0, err[-2000:]
    assert np.load(out)["mu"].shape == (100, 4)
    # the --model.* flags of the fit line, copied along, are the checkpoint's own: accepted
    fit_line = ["--model", "vae_lightning.VAE", "--model.init_args.latent_dim", "4"]
    fit_line += ["--model.init_args.encoder.init_args.hidden", "[16]", "--model.init_args.iw_samples=2"]
    out.unlink()
    code, err = vae(capsys, "encode", str(finished["ckpt"]), *fit_line, "--split", "test", "--out", str(out))
    assert code == 0, err[-2000:]
    assert np.load(out)["mu"].shape == (100, 4)  # the fake MNIST test split of the fixture, 4 latents


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "prepare", "{base}/data", "{base}/p", "--image_size", "0"],  # the hyphen spelling's own refusal
        ["sample", "{ckpt}", "--batch_size", "0", "--out", "{base}/s.png"],
        ["slurm", "submit", "--config", "{config}", "--gpus_per_node", "-1", "--dry-run"],
    ],
    ids=["prepare --image_size", "sample --batch_size", "slurm --gpus_per_node"],
)
def test_argparse_commands_take_underscores_too(argv, finished, calm, capsys):
    """`--image_size` reaches the option `--image-size` (its range check answers, not "unrecognized")."""
    code, err = vae(capsys, *(a.format(**finished) for a in argv))
    assert code == 2 and "unrecognized" not in err and ("must be" in err or ">=" in err), err[-2000:]
