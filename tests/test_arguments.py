"""vae's own argparse commands (compare, encode, slurm submit, the picture commands) share one
parser class: a bad argument is one UserError line that names the command and its --help."""

import pytest

from vae_lightning.cli import compare, encode, pictures, slurm
from vae_lightning.errors import UserError

PARSERS = {
    "vae compare": compare.parser,
    "vae encode": encode._parser,
    "vae slurm submit": slurm._parser,
    "vae sample": lambda: pictures._parser("sample"),
}


@pytest.mark.parametrize("prog", PARSERS)
def test_a_bad_argument_is_one_line_naming_the_command_and_its_help(prog):
    with pytest.raises(UserError) as err:
        PARSERS[prog]().parse_args(["--no-such-option"])
    message = str(err.value)
    assert message.startswith(f"{prog}: ") and message.endswith(f"(see `{prog} --help`).")
    assert "\n" not in message
