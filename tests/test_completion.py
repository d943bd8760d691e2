"""`vae --print_completion bash|zsh` writes a completion script of the real parser (issue 17, item 4)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from vae_lightning.cli import main


@pytest.mark.parametrize("shell", ["bash", "zsh"])
@pytest.mark.slow
def test_the_completion_script_knows_the_subcommands_and_their_options(shell, capsys):
    main(["--print_completion", shell])
    script = capsys.readouterr().out
    for word in ("fit", "predict", "--trainer.max_steps", "--ckpt_path", "--scores.path", "--checkpoint.dirpath"):
        assert word in script, word
    if shell == "zsh":
        assert script.startswith("#compdef vae")
    elif shutil.which("bash"):
        check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert check.returncode == 0, check.stderr


def test_an_unknown_shell_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--print_completion", "fish"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "fish" in err[0] and "bash" in err[0], err
