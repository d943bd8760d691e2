"""``vae compare``: one table (and figures) of many runs, offline, from their run folders.

    vae compare --study runs/betas                       # every task folder of a study
    vae compare runs/a runs/b/checkpoints/version_1      # run roots or checkpoint folders
    vae compare --study runs/betas --out report --html   # + Markdown, CSV, PNG figures, HTML
    vae compare --wandb ENTITY/PROJECT --study betas     # the same from W&B (online users)

A run is a checkpoint folder holding the records of ``callbacks.RunRecord`` (``summary.json``,
``history.csv``) and ``vae_config.yaml`` (``provenance.json`` when present). Reading them needs
no torch, no logger and no network. Here: finding and loading runs, which runs compare, differing
config keys and the default grouping, provenance flags; the tables and the groups are in
``compare_table``, figures and HTML in ``compare_figures``, the command line in ``vae_lightning.cli.compare``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vae_lightning.errors import UserError
from vae_lightning.runtime.records import SUMMARY, read_history, read_summary

DEFAULT_METRICS = ("test/nll_iw", "test/elbo", "test/kl", "test/recon", "test/active_units")
# shown when some run has them (the Disentanglement callback's keys, in its order)
OPTIONAL_METRICS = (
    "test/mig",
    "test/factor_vae",
    "test/dci_disentanglement",
    "test/dci_completeness",
    "test/dci_informativeness",
    "test/sap",
    "test/modularity",
    "test/explicitness",
    "test/beta_vae",
)
CURVE_KEYS = ("val/elbo",)  # the history a learning curve needs (read from W&B too)
# config keys that name this run's files or ids: they differ between any two runs and say nothing
IGNORED_KEYS = (
    "trainer.default_root_dir",
    "checkpoint.dirpath",
    "images.dirpath",
    "preemption.done_file",  # a per-task path that `vae slurm submit --test` sets
    "scores.path",
    "ckpt_path",
    "config",
)
IGNORED_LOGGER_FIELDS = ("save_dir", "name", "id", "version", "group", "tags", "job_type", "resume", "dir")
# the identity of the data, from provenance.json (split_seed may differ on purpose: it is a config key)
DATA_IDENTITY = ("class", "checksum_or_version", "binarize")
# a study task's records beside its checkpoints/ (written by `vae study run|submit`, cli/study_folders.py)
TASK_FILE, STARTS_FILE, FINISHED_FILE = "task.json", "starts", "task.done"
# the keys a study task adds to its run's config: its entry and its grid point ("beta=4")
ENTRY_KEY, POINT_KEY = "entry", "point"
# a study task's record in its W&B run: entry, point, seed, hash in the config; restarts, wall_time in the summary
WANDB_TASK_KEY = "study_task"
# model parameters a class ignores in one of its forms, so that a row shows them empty instead of
# their defaults: (class name, parameter) -> whether it is unused, given the flattened init_args
UNUSED = {
    ("BetaVAE", "beta"): lambda a: a.get("c_max") is not None,  # the capacity form weighs |kl - C| by gamma
    ("BetaVAE", "c_steps"): lambda a: a.get("c_max") is None,  # the plain form has no capacity
    ("BetaVAE", "gamma"): lambda a: a.get("c_max") is None,
}


@dataclass
class Run:
    """One run: ``name`` (its folder, relative to the study), ``status`` (running | finished |
    failed | preempted | unknown), ``config`` (flattened ``vae_config.yaml``: "model.init_args.beta" -> 4.0),
    ``summary`` (last and best metric values, ``step``, ``wall_time`` in seconds), ``history``
    (rows of ``step``, ``wall_time``, metrics) and ``provenance`` (None: unknown)."""

    name: str
    path: str
    status: str
    config: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    provenance: dict[str, Any] | None = None
    flags: list[str] = field(default_factory=list)  # provenance that differs from the other runs
    task: dict[str, Any] | None = None  # a study task's entry, point, restarts and wall_time (whole task)

    def metric(self, key: str) -> float | None:
        value = self.summary.get(key)
        if isinstance(value, dict):  # W&B summaries of define_metric(summary="max"), e.g. {"max": ...}
            value = value.get("max", value.get("min", value.get("last")))
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict of dotted keys; lists and scalars are values."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def parse_task_name(name: str) -> dict[str, Any]:
    """``"model.init_args.beta=4,seed_everything=1"`` -> {key: value} ({} for another name)."""
    parts = re.split(r",(?=[\w.\-]+=)", name)
    if not all(re.fullmatch(r"[\w.\-]+=.*", p) for p in parts):
        return {}
    out = {}
    for part in parts:
        key, _, text = part.partition("=")
        try:
            out[key] = yaml.safe_load(text)
        except yaml.YAMLError:
            out[key] = text
    return out


def _is_run_folder(folder: Path) -> bool:
    return any((folder / f).is_file() for f in (SUMMARY, "vae_config.yaml")) or any(folder.glob("*.ckpt"))


def _run_folders(root: Path) -> list[Path]:
    """The checkpoint folders of a run root (``checkpoints/version_N``, ``slurm-*``), or root itself."""
    if _is_run_folder(root) and not (root / "checkpoints").is_dir():
        return [root]
    checkpoints = root / "checkpoints"
    if not checkpoints.is_dir():
        return []
    subs = sorted((p for p in checkpoints.iterdir() if p.is_dir() and _is_run_folder(p)), key=_natural)
    return subs or ([checkpoints] if _is_run_folder(checkpoints) else [])


def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def model_class(config: dict[str, Any]) -> str:
    """The last part of ``model.class_path`` ("BetaVAE"), "" when there is none."""
    return str(config.get("model.class_path") or "").rsplit(".", 1)[-1]


def drop_unused(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without the model parameters its class ignores in the form it runs (``UNUSED``)."""
    prefix, cls = "model.init_args.", model_class(config)
    args = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
    return {k: v for k, v in config.items() if not (unused := UNUSED.get((cls, k[len(prefix) :]))) or not unused(args)}


def read_task(folder: Path) -> dict[str, Any] | None:
    """The study task a checkpoint folder belongs to (``task.json`` in it or two levels up), as
    ``study_task`` reads it: restarts from ``starts``, the wall time from the first start to
    ``task.done``; None outside a study."""
    root = next((p for p in (folder, folder.parent.parent) if (p / TASK_FILE).is_file()), None)
    if root is None:
        return None
    try:
        record = json.loads((root / TASK_FILE).read_text())
        starts = [float(t) for t in (root / STARTS_FILE).read_text().split()] if (root / STARTS_FILE).is_file() else []
        done = (root / FINISHED_FILE).read_text().split() if (root / FINISHED_FILE).is_file() else []
    except (OSError, ValueError):
        return None
    restarts = max(len(starts) - 1, 0) if starts else None
    return study_task(record, restarts, float(done[0]) - starts[0] if starts and done else None)


def study_task(record: dict[str, Any], restarts: int | None, wall_time: float | None) -> dict[str, Any]:
    """A study task from its record (``task.json``, or the ``study_task`` of its W&B run's config):
    entry, grid point (values parsed), seed and hash; with its restarts and its wall time (start-up,
    fit and test; None while unfinished)."""
    point = {k: yaml.safe_load(str(v)) for k, v in (record.get("point") or {}).items()}
    return {
        "entry": str(record.get("entry", "")),
        "point": point,
        "seed": record.get("seed"),
        "hash": str(record.get("hash", "")),
        "restarts": restarts,
        "wall_time": wall_time,
    }


def point_label(point: dict[str, Any]) -> str:
    """``beta=4`` for a grid point (``-`` for none), with each key's shortest unambiguous part."""
    names = short_names(list(point))
    return ",".join(f"{names[k]}={fmt(v)}" for k, v in point.items()) or "-"


def load_run(folder: Path, name: str, task: dict[str, Any] | None = None) -> Run:
    """Read one checkpoint folder's records; ``task`` holds the values of its study folder's name.
    A study task's run gets the config keys ``entry`` and ``point``."""
    config: dict[str, Any] = {}
    try:
        config = flatten(yaml.safe_load((folder / "vae_config.yaml").read_text()) or {})
    except (OSError, yaml.YAMLError):
        pass
    for key, value in (task or {}).items():
        config.setdefault(key, value)
    config = drop_unused(config)
    record = read_task(folder)
    if record is not None:
        config[ENTRY_KEY], config[POINT_KEY] = record["entry"], point_label(record["point"])
    summary = read_summary(folder)
    provenance = None
    try:
        provenance = json.loads((folder / "provenance.json").read_text())
    except (OSError, ValueError):
        pass
    status = str(summary.get("status", "unknown"))
    return Run(name, str(folder), status, config, summary, read_history(folder), provenance, task=record)


def find_runs(paths: list[str], study: str | None = None, skip: Path | None = None) -> tuple[list[Run], list[str]]:
    """Runs under ``paths`` (run roots or checkpoint folders) and every task folder of ``study``;
    also one note per folder that holds no run."""
    runs, notes = [], []
    targets: list[tuple[Path, str, dict]] = []
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            notes.append(f"{p}: no such folder; skipped.")
            continue
        targets.append((path, p.rstrip("/"), parse_task_name(path.name)))
    if study is not None:
        root = Path(study)
        if not root.is_dir():
            raise UserError(f"--study {study!r}: no such folder; give the folder that holds the study's task folders.")
        children = sorted((c for c in root.iterdir() if c.is_dir() and not c.name.startswith(".")), key=_natural)
        for child in children:
            if skip is not None and child.resolve() == skip.resolve():
                continue  # our own output folder
            targets.append((child, child.name, parse_task_name(child.name)))
    not_started = []
    for path, name, task in targets:
        folders = _run_folders(path)
        if not folders and (path / TASK_FILE).is_file():
            not_started.append(name)  # a study task waiting its turn: one note for all of them, not one each
        elif not folders:
            notes.append(f"{name}: not a run folder (no checkpoints/, summary.json or vae_config.yaml); skipped.")
        for folder in folders:
            label = name if len(folders) == 1 else f"{name}/{folder.name}"
            runs.append(load_run(folder, label, task))
    if not_started:
        notes.append(
            f"{len(not_started)} study task(s) not started yet ({', '.join(not_started)}); skipped "
            "(`vae study status` lists them)."
        )
    return runs, notes


# ---- which runs can be compared ----------------------------------------------------------------


def select(runs: list[Run], metrics: list[str]) -> tuple[list[Run], list[str]]:
    """The runs that finished with all ``metrics``, and one note for each other run."""
    kept, notes = [], []
    for run in runs:
        if run.status in ("running", "preempted"):
            notes.append(
                f"{run.name}: in progress (status {run.status} at step {run.summary.get('step', '?')}; a job "
                "killed without a chance to write stays so); skipped."
            )
        elif run.status == "failed":
            notes.append(
                f"{run.name}: failed ({run.summary.get('error', 'see its log')}) at step "
                f"{run.summary.get('step', '?')}; skipped."
            )
        elif missing := [m for m in metrics if run.metric(m) is None]:
            hint = (
                "no summary.json (trained before run records?)" if not run.summary else f"missing {', '.join(missing)}"
            )
            fix = (
                "run `vae test --ckpt_path <its last.ckpt>`"
                if any(m.startswith("test/") for m in missing)
                else "choose other --metrics"
            )
            notes.append(f"{run.name}: {hint}; {fix}; skipped.")
        else:
            kept.append(run)
    return kept, notes


def default_metrics(runs: list[Run]) -> list[str]:
    """The default test metrics, plus each disentanglement metric that some run has."""
    return [*DEFAULT_METRICS, *(m for m in OPTIONAL_METRICS if any(r.metric(m) is not None for r in runs))]


def _ignored(key: str) -> bool:
    if key in IGNORED_KEYS or key.endswith("._instantiator"):
        return True
    return key.startswith("trainer.logger") and key.rsplit(".", 1)[-1] in IGNORED_LOGGER_FIELDS


def canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def differing_keys(runs: list[Run]) -> list[str]:
    """Config keys whose values are not the same in every run (missing counts as a value)."""
    keys = sorted({k for r in runs for k in r.config if not _ignored(k)})
    return [k for k in keys if len({canon(r.config.get(k)) for r in runs}) > 1]


def is_seed_key(key: str) -> bool:
    return key == "seed_everything" or key.rsplit(".", 1)[-1] == "seed"


def is_study(runs: list[Run]) -> bool:
    """Whether every run is a task of a study file (``vae study run|submit``)."""
    return bool(runs) and all(r.task is not None for r in runs)


def default_group_keys(runs: list[Run], keys: list[str]) -> list[str]:
    """A study's entries and grid points (the seeds pooled); else every differing key but the seeds."""
    if is_study(runs):
        return [ENTRY_KEY, POINT_KEY]
    return [k for k in keys if not is_seed_key(k)]


def resolve_keys(wanted: list[str], runs: list[Run]) -> list[str]:
    """``--group-by`` names as config keys; a name may be a key's last part (``beta``)."""
    keys = sorted({k for r in runs for k in r.config})
    out = []
    for name in wanted:
        found = [k for k in keys if k == name] or [k for k in keys if k.endswith("." + name)]
        if len(found) != 1:
            hint = f"it matches {', '.join(found[:3])}" if found else "no run's config has it"
            raise UserError(
                f"--group-by {name!r}: {hint}; give a full key, e.g. one of "
                f"{', '.join(differing_keys(runs)) or 'the keys in vae_config.yaml'}."
            )
        out.append(found[0])
    return out


def short_names(keys: list[str], among: list[str] | None = None) -> dict[str, str]:
    """The shortest dotted suffix of each key that no other key of ``among`` (default: ``keys``)
    shares (model.init_args.beta -> beta); with all of the runs' keys as ``among``, each name
    is one that ``--group-by`` accepts."""
    among = keys if among is None else among
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            if sum(k == name or k.endswith("." + name) for k in {*among, key}) == 1:
                break
        out[key] = name
    return out


def sort_value(value: Any) -> tuple:
    """Numbers first, by value; then text in natural order ("beta=2" before "beta=16")."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), ())
    parts = re.split(r"(\d+(?:\.\d+)?)", value if isinstance(value, str) else canon(value))
    return (1, 0.0, tuple((0, float(t), "") if i % 2 else (1, 0.0, t) for i, t in enumerate(parts)))


# ---- provenance -------------------------------------------------------------------------------


def flag_provenance(runs: list[Run]) -> list[str]:
    """Mark runs whose code, data or library versions differ from most runs' (``run.flags``);
    returns notes (runs without provenance.json are unknown, never flagged)."""
    aspects = {
        "code": lambda p: p.get("code_version"),
        "data": lambda p: {k: (p.get("data") or {}).get(k) for k in DATA_IDENTITY},
        "versions": lambda p: p.get("versions"),
    }
    for name, get in aspects.items():
        values = {r.name: canon(get(r.provenance)) for r in runs if r.provenance is not None}
        if len(set(values.values())) < 2:
            continue
        common = max(set(values.values()), key=list(values.values()).count)
        for run in runs:
            if run.name in values and values[run.name] != common:
                run.flags.append(name)
    notes = []
    unknown = [r.name for r in runs if r.provenance is None]
    if unknown:
        notes.append(
            f"{len(unknown)} of {len(runs)} runs have no provenance.json: their code and data versions are unknown."
        )
    flagged = [f"{r.name} ({', '.join(r.flags)})" for r in runs if r.flags]
    if flagged:
        notes.append(f"code/data/library versions differ from the other runs': {'; '.join(flagged)}.")
    return notes


def fmt(value: Any) -> str:
    """A cell as text: 4 significant digits, ``mean ± sd`` for pairs, ``—`` for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, tuple):
        mean, sd = value
        return fmt(mean) if math.isnan(sd) else f"{fmt(mean)} ± {sd:.2g}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return value if isinstance(value, str) else canon(value)
