"""The ``vae`` command: a LightningCLI over the VAE models and data modules.

    vae fit --config configs/sprites/vae.yaml
    vae test --config configs/sprites/vae.yaml --ckpt_path runs/sprites-vae/checkpoints/last.ckpt
    vae fit --print_config

Heavy imports (torch, lightning, wandb) happen only once a subcommand runs, so ``vae --help``
answers at once.

The package: ``lightning`` (the LightningCLI subclass), ``pictures`` (sample/traverse/interpolate),
``slurm`` (``vae slurm submit`` and what a run inside a SLURM job needs), ``preflight`` (checks of
the config against this machine before anything is built), ``explain`` (jsonargparse's errors as
one sentence).
"""

from __future__ import annotations

import sys

SUBCOMMANDS = {
    "fit": "train a model (the main job)",
    "validate": "evaluate on the validation split",
    "test": "evaluate on the test split",
    "predict": "score every input of the predict split as an anomaly (CSV, --scores.path)",
    "encode": "write the latents (mu, log sigma^2) of a data split to a .npz or .pt file",
    "sample": "draw samples from a checkpoint: a PNG grid, a folder of PNGs or an .npz array",
    "traverse": "latent traversals of a checkpoint as a PNG grid",
    "interpolate": "latent interpolations of a checkpoint as a PNG grid",
    "slurm": "write and submit a SLURM batch script for `vae fit` (vae slurm submit --help)",
    "study": "run, submit or check a study file's tasks (vae study --help)",
    "compare": "one table and figures of many runs or a study, offline (vae compare --help)",
    "data": "prepare a data set for streaming: vae data prepare SRC DST (vae data prepare --help)",
}
# picture commands take a checkpoint, not a config; they do not go through LightningCLI
PICTURE_COMMANDS = ("sample", "traverse", "interpolate")

HELP = """usage: vae [-h] [--version] [--print_completion SHELL] {{{names}}} ...

Train and evaluate Variational Autoencoders (VAE, beta-VAE, free-bits VAE) with Lightning.

subcommands:
{lines}

Run `vae SUBCOMMAND --help` for the options of one subcommand,
`vae --print_completion bash|zsh` for a shell completion script, and
`vae fit --config configs/sprites/vae.yaml --print_config` to see a whole run's config.
Errors in your config or files are printed as one line; set VAE_DEBUG=1 for tracebacks.
"""


def _quick_help() -> str:
    lines = "\n".join(f"  {name:<13}{text}" for name, text in SUBCOMMANDS.items())
    return HELP.format(names=",".join(SUBCOMMANDS), lines=lines)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vae-lightning")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _fail(message: str) -> None:
    print(f"vae: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``vae`` console script."""
    argv = sys.argv[1:] if args is None else list(args)
    if not argv or argv[0] in ("-h", "--help"):
        print(_quick_help())
        return
    if argv[0] == "--version":
        print(f"vae-lightning {_version()}")
        return
    completion = argv[0] == "--print_completion"
    if not completion and (argv[0].startswith("-") or argv[0] not in SUBCOMMANDS):
        _fail(f"unknown subcommand {argv[0]!r}; choose one of {', '.join(SUBCOMMANDS)} (see `vae --help`).")
    if argv[0] in ("fit", "validate", "test", "predict") or argv[:2] == ["study", "task"]:
        # first of all: a SLURM requeue signal during the seconds of start-up must not kill the task
        from vae_lightning.runtime import requeue_signal

        requeue_signal.catch()
    from vae_lightning.cli import console
    from vae_lightning.errors import Interrupted, UserError

    try:
        if completion:
            from vae_lightning.cli.completion import completion_script

            print(completion_script(argv[1] if len(argv) > 1 else ""))
            return None
        if argv[0] == "slurm":  # torch and lightning only to parse the fit line once the options are checked
            from vae_lightning.cli.slurm import main as slurm_main

            return slurm_main(argv[1:])
        if argv[0] == "study":  # torch only once tasks are resolved
            from vae_lightning.cli.study_command import main as study_main

            return study_main(argv[1:])
        if argv[0] == "compare":  # no torch either: reads run folders
            from vae_lightning.cli.compare import main as compare_main

            return compare_main(argv[1:])
        if argv[0] == "data":  # argument parsing imports neither torch nor litdata
            from vae_lightning.cli.prepare import main as data_main

            return data_main(argv[1:])
        console.quiet(wandb=argv[0] not in (*PICTURE_COMMANDS, "encode"))
        if argv[0] == "encode":
            from vae_lightning.cli.encode import main as encode_command

            encode_command(argv[1:])
        elif argv[0] in PICTURE_COMMANDS:
            from vae_lightning.cli.pictures import main as picture_command

            picture_command(argv)
        else:
            run(args)
    except UserError as err:
        if console.debug():
            raise
        _fail(str(err))
    except Interrupted as err:
        print(err, file=sys.stderr)
        raise SystemExit(128 + err.signum) from None


def run(args: list[str] | None = None):
    """Parse ``args`` (None: the command line) and run; returns the ``LightningCLI`` object."""
    from vae_lightning.cli.lightning import VAECLI

    return VAECLI(args=args)


if __name__ == "__main__":
    main()
