"""``Parser``: the argparse parser of vae's own commands (compare, encode, slurm submit and the
picture commands; ``fit`` and the other Lightning subcommands parse with jsonargparse)."""

from __future__ import annotations

import argparse
from typing import NoReturn

from typing_extensions import override

from vae_lightning.errors import UserError


class Parser(argparse.ArgumentParser):
    """A bad argument is a ``UserError`` (one line and exit 2, like every other ``vae`` error)
    that names the command and where its options are listed."""

    @override
    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message} (see `{self.prog} --help`).")
