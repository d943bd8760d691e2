"""`vae validate|test|predict --ckpt_path X` needs nothing else: the model class, its arguments
and the data come from the vae_config.yaml that `vae fit` saved beside the checkpoint; flags
given explicitly still override it (issue 17, item 3). In-process through `vae_lightning.cli.main`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from vae_lightning.cli import main
from vae_lightning.cli.saved_config import flag_value, with_saved_config
from vae_lightning.errors import UserError

# a β-VAE: the class the defaults (vae_lightning.VAE) would not build
BETA = """
trainer:
  max_steps: 2
  limit_val_batches: 1
  limit_test_batches: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
model:
  class_path: vae_lightning.BetaVAE
  init_args:
    beta: 2.0
    latent_dim: 3
    iw_samples: 2
    encoder: {class_path: vae_lightning.MLPEncoder, init_args: {hidden: [8]}}
    decoder: {class_path: vae_lightning.MLPDecoder, init_args: {hidden: [8]}}
data:
  class_path: vae_lightning.data.SpritesDataModule
  init_args: {batch_size: 8, num_images: 64, val_size: 16}
images:
  every_n_val: 0
disentanglement:
  metrics: [mig, factor_vae]  # the classifier-based metrics add minutes; tests/test_evaluation_cli.py has them
"""


@pytest.fixture(scope="module")
def beta_ckpt(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("saved-config")
    (base / "beta.yaml").write_text(BETA)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.argv", ["vae"])
        main(["fit", "--config", str(base / "beta.yaml"), "--trainer.default_root_dir", str(base / "run")])
    ckpt = base / "run" / "checkpoints" / "version_0" / "last.ckpt"
    assert ckpt.is_file() and (ckpt.parent / "vae_config.yaml").is_file()
    return ckpt


@pytest.mark.slow
def test_vae_test_with_only_the_checkpoint_prints_the_test_table(beta_ckpt, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["vae"])
    saved = yaml.safe_load((beta_ckpt.parent / "vae_config.yaml").read_text())
    assert saved["model"]["class_path"] == "vae_lightning.BetaVAE" and saved["model"]["init_args"]["beta"] == 2.0
    capsys.readouterr()
    main(["test", "--ckpt_path", str(beta_ckpt)])
    out = capsys.readouterr().out
    values = dict(re.findall(r"test/(\w+)\s*[│|]?\s+([-+\d.e]+)", out))
    assert {"loss", "elbo", "nll_iw"} <= set(values), out[-2000:]


def test_flags_given_explicitly_override_the_saved_config(beta_ckpt, monkeypatch):
    monkeypatch.setattr("sys.argv", ["vae"])
    args = [
        "test",
        "--ckpt_path",
        str(beta_ckpt),
        "--model.init_args.iw_samples",
        "7",
        "--data.init_args.batch_size",
        "4",
    ]
    argv = with_saved_config(args)
    assert argv[:3] == ["test", "--config", str(beta_ckpt.parent / "vae_config.yaml")] and argv[3:] == args[1:]
    parsed = _parse(args)
    assert parsed.model.class_path == "vae_lightning.BetaVAE" and parsed.model.init_args.beta == 2.0
    assert parsed.model.init_args.iw_samples == 7 and parsed.data.init_args.batch_size == 4


def _parse(argv: list[str]):
    """The subcommand's config that `vae` parses from argv (checkpoint merged in), no class built."""
    from vae_lightning.cli.lightning import VAECLI

    class ParseOnly(VAECLI):
        def before_instantiate_classes(self) -> None:
            raise _Parsed(self.config[self.subcommand])

    try:
        ParseOnly(args=argv)
    except _Parsed as done:
        return done.config
    raise AssertionError("the command did not parse")


class _Parsed(Exception):
    def __init__(self, config) -> None:
        super().__init__("parsed")
        self.config = config


def test_a_checkpoint_without_a_saved_config_asks_for_one_in_one_line(beta_ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["vae"])
    monkeypatch.delenv("VAE_DEBUG", raising=False)
    lone = tmp_path / "lone.ckpt"
    shutil.copy(beta_ckpt, lone)
    with pytest.raises(SystemExit) as exit_:
        main(["validate", "--ckpt_path", str(lone)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert "lone.ckpt" in err[0] and "--config" in err[0], err


def test_the_saved_config_is_only_read_for_evaluations_of_a_checkpoint_file(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"")
    (tmp_path / "vae_config.yaml").write_text("{}")
    assert with_saved_config(["fit", "--ckpt_path", str(ckpt)]) == ["fit", "--ckpt_path", str(ckpt)]
    assert with_saved_config(["test", "--ckpt_path", "last"]) == ["test", "--ckpt_path", "last"]
    assert with_saved_config(["predict", f"--ckpt_path={ckpt}"])[1:3] == ["--config", str(tmp_path / "vae_config.yaml")]
    assert flag_value(["--config", "a.yaml", "--config=b.yaml"], "--config") == "b.yaml"
    (tmp_path / "vae_config.yaml").unlink()
    assert with_saved_config(["test", "--config", "x.yaml", "--ckpt_path", str(ckpt)])[1] == "--config"
    with pytest.raises(UserError, match=r"vae_config\.yaml"):
        with_saved_config(["test", "--ckpt_path", str(ckpt)])
