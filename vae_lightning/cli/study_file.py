"""A study file: several entries, each a config stack with its own grid, times the study's seeds.

    name: locatello_mini            # the study folder's and the W&B group's name
    seeds: [0, 1, 2]                # every entry x every grid point x every seed
    args: [--trainer.max_steps, "5000"]   # optional, given to every task
    entries:
      - name: beta_vae
        config: [configs/base.yaml, configs/sprites/vae.yaml, configs/sprites/beta_vae.yaml]
        grid: {model.init_args.beta: [1, 2, 4]}   # optional
        args: [--trainer.max_steps, "300"]          # optional, this entry's tasks only

Config paths resolve like ``--config`` (absolute, or relative to the current folder). A task's
``vae fit`` arguments are: its entry's configs, the study's ``args``, the entry's ``args``, the
arguments after ``--`` on the command line, its grid point, then its seed, which sets
``seed_everything`` (model init, sampling) and ``data.init_args.seed`` (data order) alike; the
test set stays the one ``split_seed`` picks. Only checks the file: imports neither torch nor
lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vae_lightning.cli import study
from vae_lightning.errors import UserError

DATA_SEED_KEY = study.DATA_SEED_KEY


@dataclass
class Entry:
    name: str
    configs: list[str]
    grid: study.Grid = field(default_factory=list)
    args: list[str] = field(default_factory=list)


@dataclass
class StudyFile:
    name: str
    seeds: list[int]
    entries: list[Entry]
    args: list[str] = field(default_factory=list)
    path: str = ""


@dataclass
class Task:
    """One run of a study: entry ``entry`` at grid point ``point`` with seed ``seed``."""

    entry: str
    point: list[tuple[str, str]]
    seed: int
    argv: list[str]  # the `vae fit` arguments, without the task's folder and logger settings

    @property
    def label(self) -> str:
        """``beta_vae,beta=4,seed=0``: readable, not unique (the hash is)."""
        return ",".join([self.entry, *study.short(self.point), f"seed={self.seed}"])


def _fail(path: str, where: str, problem: str) -> UserError:
    return UserError(f"study file {path!r}: {where} {problem}")


def _strings(path: str, where: str, value) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(a, (str, int, float)) for a in value):
        raise _fail(path, where, f'must be a list of arguments, e.g. [--trainer.max_steps, "5000"], got {value!r}.')
    return [str(a) for a in value]


def _grid(path: str, where: str, value) -> study.Grid:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise _fail(
            path,
            where,
            f"must map config keys to lists of values, e.g. {{model.init_args.beta: [1, 4]}}, got {value!r}.",
        )
    grid = []
    for key, values in value.items():
        if not isinstance(values, list) or not values or any(isinstance(v, (dict, list)) for v in values):
            raise _fail(path, f"{where}.{key}", f"must be a non-empty list of values, got {values!r}.")
        if key in (study.SEED_KEY, DATA_SEED_KEY):
            raise _fail(path, f"{where}.{key}", "is set by the study's seeds; list them under `seeds:`.")
        text = ",".join(yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip() for v in values)
        try:
            grid.append(study.parse_array(f"{key}={text}"))
        except UserError as err:
            raise _fail(path, f"{where}.{key}", str(err)) from None
        if len(grid[-1][1]) != len(values):  # a value with a comma would split in two
            raise _fail(path, f"{where}.{key}", f"has a value with a comma ({values!r}); give scalars.")
    return grid


def load(path: str) -> StudyFile:
    """Read and check the study file at ``path``; ``UserError`` (one line) naming the bad key."""
    if not Path(path).is_file():
        raise UserError(f"study file {path!r} not found; give the path of a study YAML (see `vae study --help`).")
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"study file {path!r} is not valid YAML ({first}); fix the file.") from None
    if not isinstance(data, dict):
        raise _fail(path, "the file", "must be a mapping with keys name, seeds, entries (see `vae study --help`).")
    unknown = set(data) - {"name", "seeds", "args", "entries"}
    if unknown:
        raise _fail(path, f"key {sorted(unknown)[0]!r}", "is not a study key; use name, seeds, args, entries.")
    name = data.get("name")
    if not isinstance(name, str):
        raise _fail(path, "name", f"must be the study's name (a folder name), got {name!r}.")
    study.check_folder_name(f"study file {path!r}: name", name)
    seeds = data.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= study.MAX_SEED for s in seeds)
    ):
        raise _fail(
            path, "seeds", f"must be a non-empty list of integers from 0 to 2**32 - 1, e.g. [0, 1, 2], got {seeds!r}."
        )
    if len(set(seeds)) < len(seeds):
        raise _fail(path, "seeds", f"repeats a seed ({seeds!r}); two tasks would be the same run.")
    entries = data.get("entries")
    if not isinstance(entries, list) or not entries:
        raise _fail(path, "entries", "must be a non-empty list of {name, config, grid} mappings.")
    out = []
    for n, entry in enumerate(entries):
        where = f"entries[{n}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _fail(path, where, f"must be a mapping with a name, got {entry!r}.")
        unknown = set(entry) - {"name", "config", "grid", "args"}
        if unknown:
            raise _fail(path, f"{where}.{sorted(unknown)[0]}", "is not an entry key; use name, config, grid, args.")
        study.check_folder_name(f"study file {path!r}: {where}.name", entry["name"])
        configs = entry.get("config")
        configs = [configs] if isinstance(configs, str) else configs
        if not isinstance(configs, list) or not configs or not all(isinstance(c, str) for c in configs):
            raise _fail(
                path, f"{where}.config", f"must be a list of YAML paths, as for `vae fit --config`, got {configs!r}."
            )
        for config in configs:
            if not Path(config).is_file():
                raise _fail(
                    path,
                    f"{where}.config",
                    f"names {config!r}, which is not a file (paths are relative to the current folder).",
                )
        out.append(
            Entry(
                entry["name"],
                configs,
                _grid(path, f"{where}.grid", entry.get("grid")),
                _strings(path, f"{where}.args", entry.get("args")),
            )
        )
    names = [e.name for e in out]
    for entry_name in names:
        if names.count(entry_name) > 1:
            raise _fail(path, "entries", f"name {entry_name!r} twice; give every entry its own name.")
    return StudyFile(name, seeds, out, _strings(path, "args", data.get("args")), path)


def tasks(spec: StudyFile, extra: list[str] = ()) -> list[Task]:
    """Every entry x grid point x seed, in the file's order (the last grid key varies fastest, seeds
    fastest of all); ``extra``: the arguments after ``--``."""
    out = []
    for entry in spec.entries:
        base = [a for c in entry.configs for a in ("--config", c)] + [*spec.args, *entry.args, *extra]
        for point in study.tasks(entry.grid) if entry.grid else [[]]:
            for seed in spec.seeds:
                argv = [*base, *(a for k, v in point for a in (f"--{k}", v))]
                argv += [f"--{study.SEED_KEY}", str(seed), f"--{DATA_SEED_KEY}", str(seed)]
                out.append(Task(entry.name, point, seed, argv))
    return out
