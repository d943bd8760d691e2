"""Help is plain text in whole sentences (issue 17): every public class opens its docstring with a
one-line summary (jsonargparse shows only that line), and the rendered help of every subcommand
and of each model and data class carries no reStructuredText markup and short subclass lists."""

from __future__ import annotations

import inspect

import pytest

import vae_lightning
import vae_lightning.callbacks as callbacks
import vae_lightning.data as data
import vae_lightning.variants as variants
from vae_lightning import likelihoods, nets, objectives, priors
from vae_lightning.cli import SUBCOMMANDS, main

PUBLIC = list(
    dict.fromkeys(
        [getattr(vae_lightning, n) for n in vae_lightning.__all__ if n[0].isupper()]
        + [getattr(data, n) for n in dir(data) if n.endswith("DataModule")]
        + [getattr(callbacks, n) for n in callbacks.__all__ if n[0].isupper()]
        + [nets.Encoder, nets.Decoder, likelihoods.Likelihood, objectives.KLSchedule, priors.Prior]
    )
)
CLASSES = [c for c in PUBLIC if isinstance(c, type)]
MODELS = [c for c in vars(variants).values() if isinstance(c, type) and issubclass(c, vae_lightning.VAE)]
DATA = [getattr(data, n) for n in dir(data) if n.endswith("DataModule") and n != "VAEDataModule"]
COMMANDS = [["slurm", "submit"] if c == "slurm" else ["data", "prepare"] if c == "data" else [c] for c in SUBCOMMANDS]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_public_class_opens_with_a_one_line_sentence(cls):
    first = (inspect.getdoc(cls) or "").split("\n")[0].strip()
    assert first.endswith("."), f"{cls.__name__}: the first docstring line is not a whole sentence: {first!r}"


def render(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main(argv)
    out = capsys.readouterr().out
    assert done.value.code in (0, None), out[-2000:]
    return out


def subclass_lists(text: str) -> list[int]:
    """The lengths of jsonargparse's "known subclasses:" lists of our options in a help text; the
    trainer's own (Lightning's callbacks, plugins, strategies) list Lightning's classes."""
    lengths = []
    for block in text.split("\n  --")[1:]:
        if not block.startswith("trainer.") and "known subclasses:" in block:
            lengths.append(len(block.split("known subclasses:")[1].split(")")[0].split(",")))
    return lengths


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_subcommand_help_is_plain_text(command, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["vae"])
    text = render(capsys, [*command, "--help"])
    assert "usage" in text and "``" not in text and ":class:" not in text
    assert all(n <= 20 for n in subclass_lists(text)), subclass_lists(text)


@pytest.mark.parametrize(
    "option, cls",
    [("--model.help", c) for c in MODELS] + [("--data.help", c) for c in DATA],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_class_help_is_plain_text_with_short_choice_lists(option, cls, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["vae"])
    text = render(capsys, ["fit", option, f"{cls.__module__}.{cls.__name__}"])
    assert "``" not in text and ":class:" not in text
    summary = inspect.getdoc(cls).split("\n")[0].rstrip(".")
    assert summary in text  # the whole first sentence, not a fragment
    assert all(n <= 20 for n in subclass_lists(text)), subclass_lists(text)
