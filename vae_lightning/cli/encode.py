"""``vae encode``: the latents of every input of one data split, as features for other models.

    vae encode runs/mnist-vae/checkpoints/version_0/last.ckpt --config configs/mnist/vae.yaml \\
        --split test --out latents.npz

The model comes from the checkpoint; the data from the ``data:`` block of the run's saved
``vae_config.yaml`` beside the checkpoint, then of the ``--config`` files (later wins), then ``--data.*`` flags.
One row per input, in the split's data order (no shuffling):

- ``index`` (N,) int64: the position of the input in the split;
- ``mu``, ``logvar`` (N, D) float32: q(z|x) = N(mu, exp(logvar)), in prior standard units;
- ``z`` (N, D) float32, with ``--sample``: one seeded draw z ~ q(z|x);
- ``group`` (D,) int64, for a model with several groups of latents (``HierarchicalVAE``): the group
  of each column (0: the top group). Its ``mu``/``logvar`` are the posterior along the mean path
  (each group given the means of the groups above), and ``z`` a draw of the whole hierarchy.
  ``--group L`` writes group L's columns only (and no ``group``);
- ``label`` (N,) int64 when the data has class labels, or ``factors`` (N, F) int64 and
  ``factor_names`` (F,) when it has ground-truth factors (sprites).

Formats, by the extension of ``--out``: ``.npz`` (``numpy.load``) or ``.pt`` (``torch.load``,
a dict of tensors; ``factor_names`` a list). Inputs are read a batch at a time (the data's
``batch_size``); memory holds the outputs, N × D floats each, not the inputs. It runs in one
process on ``--device`` and writes one file, atomically (a failed run leaves none).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vae_lightning.cli.arguments import Parser
from vae_lightning.cli.console import hyphenated
from vae_lightning.errors import UserError
from vae_lightning.runtime.atomic import atomic_open
from vae_lightning.runtime.outputs import check_output, progress

SPLITS = ("train", "val", "test", "predict")
STAGE = {"train": "fit", "val": "fit", "test": "test", "predict": "predict"}
FORMATS = (".npz", ".pt")
# option sections of `vae fit` that a user may copy along with the --model.* flags
FIT_SECTIONS = (
    "--trainer",
    "--seed_everything",
    "--checkpoint",
    "--images",
    "--nonfinite",
    "--collapse",
    "--ckpt_path",
)


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="vae encode",
        description="write mu and log sigma^2 of q(z|x) for every input of a data split",
        epilog="--data.* flags (e.g. --data.init_args.batch_size 512) override the configs' data block.",
    )
    p.add_argument("checkpoint", help="a .ckpt file written by `vae fit`")
    p.add_argument("--config", action="append", default=[], help="YAML config with a data: block (repeatable)")
    p.add_argument("--split", default="test", help="train, val, test or predict (default: %(default)s)")
    p.add_argument("--out", default="latents.npz", help="output file, .npz or .pt (default: %(default)s)")
    p.add_argument("--sample", action="store_true", help="also write one draw z ~ q(z|x) per input")
    p.add_argument(
        "--group", type=int, help="only this group of latents (a hierarchical model's; 0: the top); default: all"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --sample draws (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: %(default)s)")
    return p


def data_module(configs: list[str], overrides: list[str]):
    """The data module of the ``data:`` blocks of ``configs`` (later files win) and ``--data.*``
    flags, built as ``vae fit`` builds it."""
    import yaml
    from jsonargparse import ArgumentError, ArgumentParser

    from vae_lightning.cli import explain
    from vae_lightning.cli.saved_config import read_config_file
    from vae_lightning.data.base import VAEDataModule

    args = []
    for name in configs:
        loaded = read_config_file(name)
        if loaded.get("data") is not None:
            args += ["--data", yaml.safe_dump(loaded["data"])]
    # a flag, not a value such as the -1 of `--data.init_args.batch_size -1`
    bad = [a for a in overrides if a.startswith("-") and not a.startswith("--data") and not a[1:2].isdigit()]
    section = "--" + bad[0].split("=")[0].split(".")[0][2:].replace("-", "_") if bad else ""  # un-hyphenated
    if section in FIT_SECTIONS:  # copied from the `vae fit` line
        raise UserError(
            f"vae encode: {bad[0]} does not apply here: encode runs no trainer and takes the model from the "
            "checkpoint, only --data.* flags change what it reads; leave it out."
        )
    if bad:
        raise UserError(f"vae encode: unrecognized argument {bad[0]}; see `vae encode --help`.")
    if not args:
        raise UserError(
            "vae encode needs the data: block of the run and the checkpoint has no vae_config.yaml beside it; "
            "pass the run's config with --config."
        )
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(VAEDataModule, "data", required=True)
    try:
        return parser.instantiate_classes(parser.parse_args(args + overrides)).data
    except (ArgumentError, ValueError, TypeError) as err:
        raise UserError(explain.explain(err)) from None


def _saved_value(block, path: list[str]):
    """The value at ``path`` (init_args left out) in a saved ``model:`` block; KeyError if absent."""
    node = block
    for part in path:
        if isinstance(node, dict) and part not in node and isinstance(node.get("init_args"), dict):
            node = node["init_args"]
        if not isinstance(node, dict) or part not in node:
            raise KeyError(part)
        node = node[part]
    return node


def _same(given, saved) -> bool:
    if isinstance(saved, dict) and "class_path" in saved:  # a class given by its path: --model.init_args.encoder X
        saved = saved["class_path"]
    if isinstance(given, str) and isinstance(saved, str) and "." in saved:
        return given == saved or given == saved.rsplit(".", 1)[1]  # vae_lightning.VAE or VAE
    if isinstance(given, list) and isinstance(saved, (list, tuple)):
        return list(given) == list(saved)
    return given == saved


def without_model_flags(overrides: list[str], saved_model: dict) -> list[str]:
    """``overrides`` without the ``--model*`` flags a user copied from the ``vae fit`` line: each
    must give the checkpoint's own value (its saved ``model:`` block), since the model comes from
    the checkpoint; a different or unknown value is refused, naming the checkpoint's."""
    import yaml

    out, i = [], 0
    while i < len(overrides):
        arg = overrides[i]
        if not (arg == "--model" or arg.startswith(("--model.", "--model="))):
            out.append(arg)
            i += 1
            continue
        flag, eq, value = arg.partition("=")
        if not eq:
            value, i = (overrides[i + 1] if i + 1 < len(overrides) else ""), i + 1
        i += 1
        path = [p for p in flag.removeprefix("--model").lstrip(".").split(".") if p and p != "init_args"]
        path = path[:-1] if path and path[-1] == "class_path" else path
        try:
            saved = _saved_value(saved_model, path)
        except KeyError:
            raise UserError(
                f"vae encode: {flag} is not a setting of the checkpoint's {saved_model.get('class_path', 'model')}; "
                "the model comes from the checkpoint, so leave the flag out."
            ) from None
        try:
            given = yaml.safe_load(value)
        except yaml.YAMLError:
            given = value
        if not _same(given, saved):
            shown = saved.get("class_path") if isinstance(saved, dict) and "class_path" in saved else saved
            raise UserError(
                f"vae encode: {flag} {value} cannot apply to the checkpoint: its {path[-1] if path else 'class'} is "
                f"{shown}, and encode takes the model as it was trained; leave the flag out."
            )
    return out


def split_loader(dm, split: str):
    """The split's loader; a split the data module lacks (or leaves empty) is the user's error."""
    if split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}.")
    dm.setup(STAGE[split])
    try:
        loader = dm.split_loader(split)
    except (UserError, AttributeError):
        loader = None
    if loader is None or len(loader) == 0:
        hint = " (set data.init_args.val_size > 0)" if split == "val" else ""
        raise UserError(f"--split {split}: {type(dm).__name__} has no {split} examples{hint}; choose another split.")
    return loader


def _targets(y) -> dict:
    import torch

    if not torch.is_tensor(y):
        return {}
    if y.dim() == 2:
        return {"factors": y.long()}
    return {"label": y.long()}


def check_group(model, group: int | None) -> slice:
    """The columns of ``--group`` (all of them for None); refuses a group the model does not have."""
    groups = model.group_slices
    if group is None:
        return slice(0, model.latent_dim)
    if not 0 <= group < len(groups):
        have = f"groups 0 to {len(groups) - 1}" if len(groups) > 1 else "one group, 0"
        raise UserError(f"--group {group}: the checkpoint's {type(model).__name__} has {have}; choose one of them.")
    return groups[group]


def encode(model, loader, dm, sample: bool, seed: int, group: int | None = None) -> dict:
    """Rows of the output file (see the module doc) for every batch of ``loader``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    columns = check_group(model, group)
    parts: dict[str, list] = {}
    with progress(len(loader), "vae encode", "batch") as bar:
        for batch in loader:
            x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) and len(batch) > 1 else (batch, None)
            mu, logvar = model.encode(x)
            rows = {"mu": mu.cpu()[:, columns], "logvar": logvar.cpu()[:, columns], **_targets(y)}
            if sample:
                rows["z"] = model.draw_posterior(x, g)[:, columns]
            for key, value in rows.items():
                parts.setdefault(key, []).append(value.cpu())
            bar.update()
    out = {key: torch.cat(values) for key, values in parts.items()}
    out["index"] = torch.arange(len(out["mu"]))
    if group is None and len(model.group_slices) > 1:
        out["group"] = torch.cat([torch.full((s.stop - s.start,), g) for g, s in enumerate(model.group_slices)])
    names = getattr(dm, "factor_names", None)
    if "factors" in out and names and len(names) == out["factors"].shape[1]:
        out["factor_names"] = list(names)
    return {"index": out.pop("index"), **out}


def save(rows: dict, path: Path) -> None:
    """Write ``rows`` as .npz or .pt (by the extension), atomically."""
    import numpy as np
    import torch

    with atomic_open(path, "wb") as f:  # a file object: numpy would append .npz to a name
        if path.suffix.lower() == ".pt":
            torch.save(rows, f)
        else:
            np.savez(f, **{k: np.asarray(v) if isinstance(v, list) else v.numpy() for k, v in rows.items()})


def _model_block(saved: Path, model) -> dict:
    """The ``model:`` block of the run's saved config; without one, the checkpoint's own hyper-parameters."""
    from vae_lightning.cli.saved_config import read_config_file

    if saved.is_file() and isinstance(read_config_file(str(saved)).get("model"), dict):
        return read_config_file(str(saved))["model"]
    cls = type(model)
    return {"class_path": f"{cls.__module__.split('.')[0]}.{cls.__name__}", "init_args": dict(model.hparams)}


def main(argv: list[str]) -> None:
    """``argv``: the arguments after ``vae encode``."""
    from vae_lightning.cli import preflight
    from vae_lightning.cli.saved_config import SAVED_CONFIG
    from vae_lightning.runtime.checkpoint import load_model

    args, overrides = _parser().parse_known_args(hyphenated(argv))
    out = check_output("--out", args.out, "file", FORMATS)
    if args.split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}, got {args.split!r}.")
    preflight.check_device("--device", args.device)
    preflight.check_seed("--seed", args.seed)
    model = load_model(args.checkpoint, map_location=args.device)
    check_group(model, args.group)  # before the data is read
    saved = Path(args.checkpoint).parent / SAVED_CONFIG  # the run's own data block first, as `vae test` reads it
    overrides = without_model_flags(overrides, _model_block(saved, model))
    dm = data_module(([str(saved)] if saved.is_file() else []) + args.config, overrides)
    if tuple(dm.image_shape) != tuple(model.image_shape):
        raise UserError(
            f"the checkpoint's model takes images of shape {tuple(model.image_shape)} but "
            f"{type(dm).__name__} yields {tuple(dm.image_shape)}; pass the config the model was trained with."
        )
    loader = split_loader(dm, args.split)
    rows = encode(model, loader, dm, args.sample, args.seed, args.group)
    save(rows, out)
    print(f"vae: wrote {len(rows['index'])} rows (index, {', '.join(k for k in rows if k != 'index')}) to {out}")
