"""The roles (encoder, decoder, likelihood, KL schedule) are typed by small base classes, so help
and errors list our classes and the user's that fit, and a user's own encoder given by
class_path trains (issue 17, item 1)."""

from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor, nn

from helpers import tiny_args
from vae_lightning.cli import main
from vae_lightning.nets import Encoder


class UserEncoder(Encoder):
    """A user's encoder outside the package: one linear layer to (mu, logvar)."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.linear = nn.Linear(image_shape[0] * image_shape[1] * image_shape[2], 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return (self.scale * self.linear(x.flatten(1))).chunk(2, dim=1)


class NotAnEncoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int) -> None:
        super().__init__()


def test_a_user_encoder_given_by_class_path_is_built_and_trains(tmp_path):
    from vae_lightning.cli.lightning import VAECLI

    args = [
        *tiny_args(),
        "--model.init_args.encoder",
        f"{__name__}.UserEncoder",
        "--model.init_args.encoder.init_args.scale",
        "0.5",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "0",
    ]
    cli = VAECLI(args=args, run=False)
    assert isinstance(cli.model.encoder, UserEncoder) and cli.model.encoder.scale == 0.5
    before = cli.model.encoder.linear.weight.detach().clone()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 2
    assert not torch.equal(before, cli.model.encoder.linear.weight), "the user's encoder was not trained"


def test_a_module_that_is_not_an_encoder_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "fit",
                *tiny_args(),
                "--model.init_args.encoder",
                f"{__name__}.NotAnEncoder",
                "--trainer.default_root_dir",
                str(tmp_path),
            ]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert "encoder" in err[0] and "NotAnEncoder" in err[0], err


def known_subclasses(help_text: str) -> dict[str, list[str]]:
    """{option: its "known subclasses"} from jsonargparse's help (one block per option)."""
    blocks = re.split(r"\n  (?=--)", help_text)
    found = {}
    for block in blocks:
        flat = re.sub(r"\s+", " ", block)
        names = re.search(r"known subclasses: ([\w., ]+?)\)", flat)
        if names:
            found[flat.split()[0]] = [n.strip() for n in names.group(1).split(",") if n.strip()]
    return found


def test_help_of_a_variant_lists_our_encoders_as_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "vae_lightning.BetaVAE"])
    text = capsys.readouterr().out
    lists = known_subclasses(text)
    assert lists["--model.encoder"][:2] == ["vae_lightning.MLPEncoder", "vae_lightning.ConvEncoder"], lists
    assert lists["--model.decoder"][:2] == ["vae_lightning.MLPDecoder", "vae_lightning.ConvDecoder"], lists
    assert lists["--model.likelihood"] == [
        "vae_lightning.Bernoulli",
        "vae_lightning.Gaussian",
        "vae_lightning.LearnedGaussian",
    ], lists
    assert {"vae_lightning.Constant", "vae_lightning.LinearWarmup", "vae_lightning.Cyclical"} <= set(
        lists["--model.kl_schedule"]
    )
    for role in ("encoder", "decoder", "likelihood", "kl_schedule"):
        assert not any(n.startswith("torch.") for n in lists[f"--model.{role}"]), lists[f"--model.{role}"]
    assert all(len(names) <= 20 for names in lists.values()), {k: len(v) for k, v in lists.items()}
    assert "--model.beta" in text and "--model.c_max" in text
