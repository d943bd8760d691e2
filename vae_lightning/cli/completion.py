"""``vae --print_completion bash|zsh|tcsh``: a shell completion script, written by shtab from the
same parser that ``vae fit|validate|test|predict`` use, so the subcommands and their options
(``--trainer.*``, ``--model``, ``--data``, ``--ckpt_path``, ``--scores.path``, …) complete.

shtab runs on the parser itself, not through jsonargparse's ``get_completion_script``: that one
also enumerates every class a typed option could take, which on this stack did not finish in
minutes of CPU. Options under a class_path (``--model.init_args.*``) are resolved at parse time,
so they do not complete; ``vae fit --model.help CLASS`` lists them.

    vae --print_completion bash > ~/.local/share/bash-completion/completions/vae
    vae --print_completion zsh > ~/.zfunc/_vae     # a folder on $fpath
"""

from __future__ import annotations

SHELLS = ("bash", "zsh", "tcsh")


class _Built(Exception):
    def __init__(self, parser) -> None:
        super().__init__("parser built")
        self.parser = parser


def completion_script(shell: str) -> str:
    """The completion script of ``vae`` for ``shell`` (one of SHELLS)."""
    from vae_lightning.cli.lightning import VAECLI
    from vae_lightning.errors import UserError

    if shell not in SHELLS:
        raise UserError(f"--print_completion takes one of {', '.join(SHELLS)}, got {shell!r}.")

    class ParserOnly(VAECLI):  # stops once the parser exists: nothing is parsed or built
        def parse_arguments(self, parser, args) -> None:
            raise _Built(parser)

    try:
        ParserOnly(args=[])
    except _Built as built:
        parser = built.parser
    import shtab

    parser.prog = "vae"
    return shtab.complete(parser, shell)
