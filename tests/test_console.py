"""The warning filters of cli/console.py drop only the messages they name."""

import os
import warnings

from vae_lightning.cli import console


def _shown(message: str) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", append=True)  # after the filters under test
        for pattern in console.WARNINGS:  # what quiet() would add: they must not hide these either
            warnings.filterwarnings("ignore", message=pattern)
        with console.without(console.CLI_ARGS):
            warnings.warn(message, UserWarning, stacklevel=1)
    return bool(caught)


def test_the_checkpoint_folder_warning_is_dropped_for_the_folder_vae_chose_only(tmp_path, monkeypatch):
    monkeypatch.delenv("VAE_DEBUG", raising=False)
    ours, theirs = tmp_path / "checkpoints" / "version_0", tmp_path / "elsewhere"
    with warnings.catch_warnings():  # own_checkpoint_dir installs a process-wide filter: undo it
        console.own_checkpoint_dir(str(ours))
        assert not _shown(console.CHECKPOINT_DIR_NOT_EMPTY.format(os.path.realpath(ours)))
        assert _shown(console.CHECKPOINT_DIR_NOT_EMPTY.format(os.path.realpath(theirs)))
        assert _shown("Checkpoint directory is full")


def test_without_drops_its_message_inside_the_block_only(monkeypatch):
    monkeypatch.delenv("VAE_DEBUG", raising=False)
    message = "LightningCLI's args parameter is intended to run from within Python like if it were ..."
    assert not _shown(message)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn(message, UserWarning, stacklevel=1)
    assert caught, "the filter outlived its block"


def test_vae_debug_turns_the_filters_off(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_DEBUG", "1")
    with warnings.catch_warnings():
        console.own_checkpoint_dir(str(tmp_path))
        assert _shown(console.CHECKPOINT_DIR_NOT_EMPTY.format(os.path.realpath(tmp_path)))
