"""Weight averaging through Lightning's EMAWeightAveraging (configs/trainer/ema.yaml, issue 28): it
leaves the raw trajectory bitwise alone, its average is the EMA of the raw weights computed here
independently, validation pictures, ``load_model`` and ``vae test`` use the average, every checkpoint
(the final one too) keeps the raw weights, and a fit resumed without it continues from them. The
bitwise resume through every interruption of bench.chaos is in tests/test_chaos.py (slow)."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import EMAWeightAveraging

from helpers import REPO, tiny_args
from vae_lightning.callbacks import ImageLogger, SLURMPreemption
from vae_lightning.cli.lightning import VAECLI, place_weight_averaging
from vae_lightning.runtime.checkpoint import load_model

DECAY = 0.5  # a short memory, so that the average differs clearly from the weights in 7 steps
# the tiny run, deterministic, with pictures at every validation
TINY = tiny_args(
    trainer__max_steps=7,  # ends between validations: the final last.ckpt is written when training ends
    trainer__val_check_interval=4,
    trainer__limit_test_batches=1,
    trainer__deterministic=True,
    images__every_n_val=1,
    images__num_images=8,
    images__traverse_dims=2,
    images__interpolations=1,
    disentanglement__enabled=False,
)
RAW: list[dict] = []  # the weights after every optimizer step of the run without averaging
DRAWN: list[dict] = []  # the weights the ImageLogger draws with


class Recorder(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        RAW.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def ema_average(weights: list[dict]) -> dict:
    """torch's AveragedModel with get_ema_avg_fn, written out: the first update copies, then
    avg ← decay·avg + (1 − decay)·w."""
    avg = dict(weights[0])
    for w in weights[1:]:
        avg = {k: DECAY * avg[k] + (1 - DECAY) * w[k] for k in avg}
    return avg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same fit without and with EMA (decay 0.5), and one with EMA to step 4 resumed without it
    to step 7; returns their last.ckpt paths and the tiny run's arguments."""
    base = tmp_path_factory.mktemp("ema")
    ema = base / "ema.yaml"
    layer = yaml.safe_load((REPO / "configs" / "trainer" / "ema.yaml").read_text())
    layer["trainer"]["callbacks"][0]["init_args"]["decay"] = DECAY
    ema.write_text(yaml.safe_dump(layer))
    recorder = base / "recorder.yaml"
    recorder.write_text("trainer:\n  callbacks: [{class_path: test_ema.Recorder}]\n")
    draw = ImageLogger.draw

    def recording_draw(self, trainer, pl_module):
        DRAWN.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})
        draw(self, trainer, pl_module)

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setattr("sys.argv", ["vae"])
        mp.setattr(ImageLogger, "draw", recording_draw)
        from vae_lightning.cli import main

        for name, layers in (("raw", [recorder]), ("ema", [ema])):
            main(["fit", *TINY, *[a for f in layers for a in ("--config", str(f))],
                  "--trainer.default_root_dir", str(base / name)])  # fmt: skip
            out[name] = base / name / "checkpoints" / "version_0" / "last.ckpt"
        root = [*TINY, "--trainer.default_root_dir", str(base / "dropped")]
        main(["fit", *root, "--config", str(ema), "--trainer.max_steps", "4"])
        with pytest.warns(UserWarning, match="this fit has none: training continues from its raw weights"):
            main(["fit", *root, "--ckpt_path", "last"])
        out["dropped"] = base / "dropped" / "checkpoints" / "version_0" / "last.ckpt"
    return out, TINY


def test_the_raw_trajectory_is_untouched_and_the_average_is_the_ema_of_it(runs):
    ckpts, _ = runs
    raw, ema = load(ckpts["raw"]), load(ckpts["ema"])
    assert raw["global_step"] == ema["global_step"] == 7 and len(RAW) == 7
    for key, value in raw["state_dict"].items():  # the final save (at train end) kept the raw weights too
        torch.testing.assert_close(ema["current_model_state"][key], value, rtol=0, atol=0)
    expected = ema_average(RAW)
    for key, value in ema["state_dict"].items():
        torch.testing.assert_close(value, expected[key], rtol=1e-6, atol=1e-7)
    assert all(not torch.equal(v, raw["state_dict"][k]) for k, v in ema["state_dict"].items())
    assert int(ema["averaging_state"]["n_averaged"]) == 7


def test_validation_pictures_load_model_and_vae_test_use_the_average(runs, caplog):
    ckpts, config = runs
    assert len(DRAWN) == 3  # one validation at step 4 in each fit: raw, ema, and the first of the resumed pair
    average_at_4 = ema_average(RAW[:4])
    for key, value in DRAWN[1].items():
        torch.testing.assert_close(value, average_at_4[key], rtol=1e-6, atol=1e-7)
    average = load(ckpts["ema"])["state_dict"]
    with caplog.at_level(logging.INFO):
        model = load_model(ckpts["ema"])
    assert "this model uses the averaged weights" in caplog.text
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, average[key], rtol=0, atol=0)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        cli = VAECLI(args=["test", *config, "--ckpt_path", str(ckpts["ema"])])
    assert "vae test uses the averaged weights" in caplog.text
    for key, value in cli.model.state_dict().items():
        torch.testing.assert_close(value, average[key], rtol=0, atol=0)


def test_a_fit_resumed_without_averaging_continues_from_the_raw_weights(runs):
    ckpts, _ = runs
    dropped, raw = load(ckpts["dropped"]), load(ckpts["raw"])
    assert "current_model_state" not in dropped and dropped["global_step"] == 7
    for key, value in raw["state_dict"].items():
        torch.testing.assert_close(dropped["state_dict"][key], value, rtol=0, atol=0)


def test_weight_averaging_is_placed_after_the_pictures_and_before_the_requeue_save():
    ema, images, preemption, other = EMAWeightAveraging(), ImageLogger(), SLURMPreemption(), Callback()
    assert place_weight_averaging([ema, other, images, preemption]) == [other, images, ema, preemption]
    assert place_weight_averaging([other, images]) == [other, images]
