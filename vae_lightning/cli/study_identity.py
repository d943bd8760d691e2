"""A study task is named by what it is: the hash of its fully resolved config.

``resolve(argv)`` parses a ``vae fit`` command line exactly as ``vae fit`` would (the same
``VAECLI`` parser, defaults and checks of keys and types) and returns the config that
``--print_config`` shows, without building a model or touching a folder. ``identity`` drops what
only says where a run writes (paths, logger names and ids, the progress display), so the same
settings written to another folder are the same task; ``task_hash`` is its short hash. Like a
content-addressed build: the same config finds its finished work, a different config never does.
"""

from __future__ import annotations

from typing import Any

from vae_lightning.errors import UserError
from vae_lightning.runtime.provenance import config_hash

#: keys that say where and how a run is recorded, not what it computes (dotted; a prefix drops a subtree)
NOT_IDENTITY = (
    "config",
    "ckpt_path",
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.enable_progress_bar",
    "checkpoint.dirpath",
    "images.dirpath",
    "preemption.done_file",
    "scores.path",
    "eval_run",
)


class _Resolved(Exception):
    def __init__(self, config: dict) -> None:
        super().__init__("resolved")
        self.config = config


def resolve(argv: list[str]) -> dict[str, Any]:
    """The resolved config of ``vae fit <argv>`` as plain nested values; ``UserError`` (one line,
    as ``vae fit`` would print it) when the arguments are wrong."""
    from typing_extensions import override

    from vae_lightning.cli.lightning import VAECLI, plain_config

    class Resolve(VAECLI):
        @override
        def before_instantiate_classes(self) -> None:  # parsed and checked: nothing is built or written
            raise _Resolved(plain_config(self.parser, self.config)["fit"])

    try:
        Resolve(args=["fit", *argv])
    except _Resolved as done:
        return done.config
    raise AssertionError("VAECLI returned without resolving the config")


def check_grid(argv: list[str], grid: list[tuple[str, list[str]]], point_args) -> None:
    """Parse ``vae fit <argv> <point>`` as ``resolve`` does at every swept value (the other keys at
    their first values; ``point_args`` gives a point's arguments): a misspelled key, or a value
    its key cannot take, is one line before a job whose every task would fail is written. One
    parser serves every point."""
    from typing_extensions import override

    from vae_lightning.cli import console
    from vae_lightning.cli.lightning import VAECLI

    class Parsed(VAECLI):
        @override
        def before_instantiate_classes(self) -> None:  # parsed and checked: nothing is built or written
            raise _Resolved({"cli": self})

    first = [(key, values[0]) for key, values in grid]
    points = [first] + [
        [*first[:n], (key, value), *first[n + 1 :]] for n, (key, values) in enumerate(grid) for value in values[1:]
    ]
    console.quiet()  # Lightning's "Seed set to 0" is not part of a --dry-run's script
    cli = None
    for point in points:
        args = ["fit", *argv, *point_args(point)]
        try:
            if cli is None:
                try:
                    Parsed(args=args)
                except _Resolved as done:
                    cli = done.config["cli"]
            else:
                cli.parse_arguments(cli.parser, args)
        except UserError as err:
            swept = ",".join(f"{k}={v}" for k, v in point)
            raise UserError(f"with --array {swept}: {err}" if point else str(err)) from None


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without the keys of ``NOT_IDENTITY``."""

    def strip(node: Any, prefix: str) -> Any:
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path not in NOT_IDENTITY:
                out[key] = strip(value, path + ".")
        return out

    return strip(config, "")


def task_hash(config: dict[str, Any]) -> str:
    """The first 10 hex digits of the identity's SHA-256."""
    return config_hash(identity(config))[:10]


def first_difference(saved: Any, new: Any, prefix: str = "") -> str | None:
    """The dotted key of the first setting that differs between two configs (None: equal)."""
    if isinstance(saved, dict) and isinstance(new, dict):
        for key in [*saved, *(k for k in new if k not in saved)]:
            if key not in saved or key not in new:
                return f"{prefix}{key}"
            found = first_difference(saved[key], new[key], f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if saved == new else prefix.rstrip(".") or "(the whole config)"
