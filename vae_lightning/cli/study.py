"""Studies for ``vae slurm submit``: a grid of swept config values as one job array.

    vae slurm submit --config ... --study betas --array model.init_args.beta=1,4 --seeds 0,1 --test

makes one array task per element of the Cartesian product of the ``--array`` values (``--seeds``
sets ``seed_everything``: model init, sampling; and ``data.init_args.seed``: data order), in the
order the keys are given (the last key varies fastest). Task ``i`` trains in
``runs/<study>/<key=value,...>/``; its W&B run has group = the study, name and tags = the swept
values. Imports neither torch nor lightning (it runs on a login node).
"""

from __future__ import annotations

import itertools
import re
import shlex
import shutil
import subprocess

from vae_lightning.errors import UserError

SEED_KEY = "seed_everything"
#: the data module's own seed (shuffling, dynamic binarization): a task's seed sets it too; the
#: test set follows ``data.init_args.split_seed`` alone
DATA_SEED_KEY = "data.init_args.seed"
#: written by the fit (``--preemption.done_file``) when it ends without a preemption; a requeued
#: ``--test`` job that finds it runs only the test
DONE_FILE = "fit.done"

Grid = list[tuple[str, list[str]]]  # (config key, values) in the order given

#: the largest seed ``seed_everything`` takes (numpy's seeds are unsigned 32-bit)
MAX_SEED = 2**32 - 1


def check_folder_name(what: str, text: str) -> str:
    """``text`` if it can be one folder's name; else ``UserError``. A study's name and every swept
    value become folder names: ``..`` or a ``/`` would put a task outside its study, and a
    control character (a newline) would end a line of the job script."""
    if text in ("", ".", "..") or "/" in text or not text.isprintable():
        raise UserError(
            f"{what} {text!r} cannot be a folder name; use letters, digits and . _ - = "
            "(no '/', no '..', no control characters)."
        )
    return text


def parse_array(text: str) -> tuple[str, list[str]]:
    """``KEY=V1,V2,...`` -> (key, values); ``UserError`` naming the text when malformed."""
    key, _, values = text.partition("=")
    key, parts = key.strip().removeprefix("--"), [v.strip() for v in values.split(",")]
    if not key or not all(parts) or not re.fullmatch(r"[\w.]+", key):
        raise UserError(f"--array takes KEY=V1,V2,..., e.g. model.init_args.beta=1,2,4; got {text!r}.")
    if key == "config":
        raise UserError(
            "--array config=... cannot vary the config stack; write a study file with one entry per stack "
            "and run `vae study submit FILE` (see `vae study --help`)."
        )
    for value in parts:
        check_folder_name(f"--array {key} value", value)
    twice = next((v for v in parts if parts.count(v) > 1), None)
    if twice is not None:  # two tasks would train in one folder
        raise UserError(
            f"--array {key} repeats a value: {twice!r} is given twice; two tasks would share a folder: give each once."
        )
    return key, parts


def grid_from(arrays: list[str] | None, seeds: str | None) -> Grid:
    """The swept keys and values of ``--array`` (repeatable) and ``--seeds``; refuses a key twice."""
    grid = [parse_array(a) for a in arrays or []]
    if seeds is not None:
        bad = next((v for v in seeds.split(",") if not re.fullmatch(r"\d+", v.strip()) or int(v) > MAX_SEED), None)
        if bad is not None:
            raise UserError(
                f"--seeds {seeds}: {bad.strip()!r} is not a seed; give integers from 0 to 2**32 - 1, "
                "e.g. --seeds 0,1,2."
            )
        grid.append(parse_array(f"{SEED_KEY}={seeds}"))
    keys = [k for k, _ in grid]
    for key in keys:
        if keys.count(key) > 1:
            hint = " (--seeds sets it)" if key == SEED_KEY else ""
            raise UserError(f"--array key {key!r} is swept twice{hint}; give each key once with all its values.")
    return grid


def tasks(grid: Grid) -> list[list[tuple[str, str]]]:
    """Every combination of the values, as [(key, value), ...] in the grid's key order."""
    keys = [k for k, _ in grid]
    return [list(zip(keys, combo, strict=True)) for combo in itertools.product(*(values for _, values in grid))]


def folder(task: list[tuple[str, str]]) -> str:
    """The task's folder under the study: ``model.init_args.beta=4,seed_everything=1``."""
    return ",".join(f"{k}={v}" for k, v in task)


def short(task: list[tuple[str, str]]) -> list[str]:
    """The swept values with the last part of each key: ``["beta=4", "seed_everything=1"]``."""
    return [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in task]


def max_array_size() -> int | None:
    """The cluster's ``MaxArraySize`` from ``scontrol show config`` (None: no scontrol or no answer)."""
    if shutil.which("scontrol") is None:
        return None
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else None


def check_size(grid: Grid) -> None:
    """Refuse, before submission, a grid with more tasks than the cluster's array indices allow
    (task ids run 0..n-1 and must stay below ``MaxArraySize``)."""
    if not grid:
        return
    n, limit = len(tasks(grid)), max_array_size()
    if limit is not None and n > limit:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in grid)
        raise UserError(
            f"the grid has {n} tasks ({sizes}) but this cluster's MaxArraySize is {limit}; "
            "sweep fewer values or split the study into several submissions."
        )


def array_lines(grid: Grid, root: str) -> list[str]:
    """Bash lines that set, for ``$SLURM_ARRAY_TASK_ID``: ``V0``, ``V1``, ... (the swept values),
    ``ROOT`` (the task's folder), ``NAME`` (W&B run name) and ``TAGS`` (W&B tags)."""
    combos = tasks(grid)
    lines = [
        "# array task i: the i-th combination of the swept values (the last key varies fastest)",
        "I=$SLURM_ARRAY_TASK_ID",
    ]
    for n, (key, _) in enumerate(grid):
        lines.append(f"V{n}=({' '.join(shlex.quote(task[n][1]) for task in combos)})  # {key}")
    lines.append(f"TASKS=({' '.join(shlex.quote(folder(t)) for t in combos)})")
    lines.append(f"NAMES=({' '.join(shlex.quote(','.join(short(t))) for t in combos)})")
    lines.append(f"TAGS=({' '.join(shlex.quote('[slurm, study, ' + ', '.join(short(t)) + ']') for t in combos)})")
    lines.append(f'ROOT={shlex.quote(root)}/"${{TASKS[$I]}}"')
    return lines


def array_args(grid: Grid) -> list[str]:
    """``vae`` arguments that set each swept key to this task's value; the seed sets the data
    module's ``seed`` (data order) as well as ``seed_everything`` (init, sampling)."""
    out = []
    for n, (key, _) in enumerate(grid):
        out += [f"--{key}", f'"${{V{n}[$I]}}"']
        if key == SEED_KEY:
            out += [f"--{DATA_SEED_KEY}", f'"${{V{n}[$I]}}"']
    return out


def point_args(point: list[tuple[str, str]]) -> list[str]:
    """The ``vae`` arguments of one task's swept values, as ``array_args`` sets them in the job."""
    out = []
    for key, value in point:
        out += [f"--{key}", value] + ([f"--{DATA_SEED_KEY}", value] if key == SEED_KEY else [])
    return out
