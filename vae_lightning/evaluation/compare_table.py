"""The tables of ``vae compare``: one row per run (the config keys that differ, a column per class
for a parameter several classes share, metrics, steps, restarts, wall time), the runs grouped by
the values of the group-by keys with mean ± sd per metric, and their text, Markdown and CSV forms.
Finding and loading the runs and choosing the keys are in ``compare``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vae_lightning.evaluation.compare import (
    ENTRY_KEY,
    POINT_KEY,
    Run,
    canon,
    fmt,
    is_seed_key,
    model_class,
    short_names,
    sort_value,
)


@dataclass
class Table:
    """Column names and rows of plain values (floats, strings, None for a missing value)."""

    columns: list[str]
    rows: list[list[Any]]


def key_columns(runs: list[Run], keys: list[str]) -> list[tuple[str, str, str | None]]:
    """(header, key, model class or None) per column: a model parameter that several classes of the
    runs have (β-VAE's and β-TCVAE's ``beta`` are different weights) gets one column per class,
    headed ``BetaVAE.beta``; every other key its shortest name among all the runs' keys."""
    names = short_names(keys, sorted({k for r in runs for k in r.config}))
    out = []
    for key in keys:
        classes = sorted({model_class(r.config) for r in runs if r.config.get(key) is not None})
        if key.startswith("model.init_args.") and len(classes) > 1:
            out += [(f"{cls}.{key[len('model.init_args.') :]}", key, cls) for cls in classes]
        else:
            out.append((names[key], key, None))
    return out


def cell(run: Run, key: str, cls: str | None) -> Any:
    """A run's value of ``key``; empty ("") where the run has none or is not of class ``cls``."""
    value = run.config.get(key) if cls is None or model_class(run.config) == cls else None
    return "" if value is None else value


def wall_time(run: Run) -> float | None:
    """A study task's whole wall time (first start to its end); else the fit's training time."""
    if run.task is not None and run.task["wall_time"] is not None:
        return run.task["wall_time"]
    return run.metric("wall_time")


def column_order(runs: list[Run], keys: list[str]) -> list[str]:
    """The entry, the other keys, then the seeds (the rows sort so): without a study's ``point``
    (its keys have their columns) and without a seed that equals ``seed_everything`` in every run."""
    seeds = [k for k in keys if is_seed_key(k)]
    same = [k for k in seeds if k != "seed_everything" and "seed_everything" in keys]
    same = [k for k in same if all(r.config.get(k) == r.config.get("seed_everything") for r in runs)]
    middle = [k for k in keys if not is_seed_key(k) and k not in (ENTRY_KEY, POINT_KEY)]
    return [*(k for k in keys if k == ENTRY_KEY), *middle, *(k for k in seeds if k not in same)]


def run_table(runs: list[Run], keys: list[str], metrics: list[str]) -> Table:
    """One row per run: name (a study task's hash: its other columns say the rest), the differing
    ``keys`` (``key_columns``), ``metrics``, steps, restarts, wall time (s, ``wall_time``) and flags;
    a parameter a run does not use is empty (None)."""
    keys = column_order(runs, keys)
    columns = key_columns(runs, keys)
    rows = []
    for run in sorted(runs, key=lambda r: [sort_value(r.config.get(k)) for k in keys] + [sort_value(r.name)]):
        restarts = run.task["restarts"] if run.task is not None else None
        rows.append(
            [
                run.task["hash"] or run.name if run.task is not None else run.name,
                *(cell(run, key, cls) for _, key, cls in columns),
                *(run.metric(m) for m in metrics),
                run.summary.get("step"),
                restarts,
                wall_time(run),
                ",".join(run.flags),
            ]
        )
    return Table(["run", *(h for h, _, _ in columns), *metrics, "steps", "restarts", "wall_time_s", "flags"], rows)


@dataclass
class Group:
    """Runs that share the values of the group-by keys."""

    values: tuple
    runs: list[Run]

    def stats(self, metric: str) -> tuple[float, float, int]:
        """Mean, sample standard deviation (ddof=1; nan for one run) and count of ``metric``."""
        xs = [x for r in self.runs if (x := r.metric(metric)) is not None and math.isfinite(x)]
        if not xs:
            return math.nan, math.nan, 0
        mean = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
        return mean, sd, len(xs)


def group_runs(runs: list[Run], keys: list[str]) -> list[Group]:
    """Groups of runs by their values of ``keys``, in sorted order of those values."""
    groups: dict[str, Group] = {}
    for run in runs:
        values = tuple(run.config.get(k) for k in keys)
        groups.setdefault(canon(values), Group(values, [])).runs.append(run)
    return sorted(groups.values(), key=lambda g: [sort_value(v) for v in g.values])


def group_table(groups: list[Group], keys: list[str], metrics: list[str]) -> Table:
    """One row per group: the key values, n, and ``(mean, sd)`` per metric."""
    names = short_names(keys, sorted({k for g in groups for r in g.runs for k in r.config}))
    columns = [*(names[k] for k in keys), "n", *metrics]
    rows = [[*g.values, len(g.runs), *(g.stats(m)[:2] for m in metrics)] for g in groups]
    return Table(columns, rows)


def shown(column: str, value: Any) -> str:
    """A cell of a printed table: ``fmt``, a class path by its class alone (the CSV keeps it whole)."""
    if column.endswith("class_path") and isinstance(value, str):
        return value.rsplit(".", 1)[-1]
    return fmt(value)


def text_table(table: Table) -> str:
    """Aligned plain text for the terminal."""
    cells = [table.columns, *([shown(c, v) for c, v in zip(table.columns, row, strict=True)] for row in table.rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def markdown_table(table: Table) -> str:
    cells = [[shown(c, v).replace("|", "\\|") for c, v in zip(table.columns, row, strict=True)] for row in table.rows]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def csv_rows(table: Table) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows for CSV: full precision, ``metric_mean`` and ``metric_sd`` for pairs."""
    pairs = [i for i, v in enumerate(table.rows[0]) if isinstance(v, tuple)] if table.rows else []
    columns = []
    for i, name in enumerate(table.columns):
        columns += [f"{name}_mean", f"{name}_sd"] if i in pairs else [name]
    rows = []
    for row in table.rows:
        out = []
        for v in row:
            out += (
                list(v) if isinstance(v, tuple) else [v if isinstance(v, (int, float, str)) or v is None else canon(v)]
            )
        rows.append(out)
    return columns, rows
