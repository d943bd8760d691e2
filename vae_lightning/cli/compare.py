"""The ``vae compare`` command line: find runs, print the tables, write the files (no torch)."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from vae_lightning.cli.arguments import Parser
from vae_lightning.cli.console import hyphenated
from vae_lightning.errors import UserError
from vae_lightning.evaluation import compare as c
from vae_lightning.evaluation import compare_table as t

USAGE = """vae compare PATH... [--study DIR] [--metrics M ...] [--group-by KEY ...] [--out DIR] [--html]
       vae compare --wandb ENTITY/PROJECT --study NAME [...]"""


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="vae compare",
        usage=USAGE,
        description=(
            "One table of many runs: the config keys that differ, test metrics, steps, restarts and wall time; "
            "grouped (mean ± sd, n) by a study's entries and grid points (vae study run|submit), else by every "
            "differing key except the seeds. --out adds figures (each metric per group, the swept "
            "hyper-parameters, Spearman correlations between metrics, the share of each metric's variance due to "
            "model, hyper-parameter and seed). Reads each run's checkpoint folder (summary.json, history.csv, "
            "vae_config.yaml, provenance.json) and a study task's task.json, starts and task.done; no network."
        ),
    )
    p.add_argument(
        "paths", nargs="*", metavar="PATH", help="run folders: a default_root_dir or a checkpoints/version_N"
    )
    p.add_argument(
        "--study",
        help="the study: its folder, every task folder in it a run (vae study run|submit, vae slurm submit "
        "--study); with --wandb its name, the W&B group of its runs",
    )
    p.add_argument(
        "--metrics",
        nargs="+",
        help=f"summary keys to compare (default: {' '.join(c.DEFAULT_METRICS)}, "
        "plus test/mig and test/factor_vae when present)",
    )
    p.add_argument(
        "--group-by",
        nargs="+",
        metavar="KEY",
        help="config keys to group by (a full key, a groups-table header or a last part like beta; default: "
        "a study's entry and point, else every differing key except seeds; 'none': one group)",
    )
    p.add_argument(
        "--out", help="folder for compare.md, runs.csv, groups.csv, variance.csv, spearman.csv and the PNG figures"
    )
    p.add_argument("--html", action="store_true", help="also write <out>/report.html with the tables and figures")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from W&B (wandb.Api(); needs a login)")
    p.add_argument("--group", help="with --wandb: the same as --study NAME (the older spelling)")
    return p


def _split(values: list[str] | None) -> list[str] | None:
    return None if values is None else [v for text in values for v in text.split(",") if v]


def load(opts) -> tuple[list[c.Run], list[str]]:
    if opts.group is not None and not opts.wandb:
        raise UserError("--group names a W&B group and needs --wandb ENTITY/PROJECT; for a folder give --study DIR.")
    if opts.wandb:
        if opts.paths:
            raise UserError("--wandb reads runs from W&B; drop the PATHs (or drop --wandb).")
        if opts.study and opts.group and opts.study != opts.group:
            raise UserError(
                f"--study {opts.study!r} and --group {opts.group!r} name the same thing; give --study alone."
            )
        if not (opts.study or opts.group):
            raise UserError("--wandb needs --study NAME (the study's name, the W&B group of its runs).")
        from vae_lightning.evaluation.compare_wandb import runs_from_wandb

        return runs_from_wandb(opts.wandb, opts.study or opts.group), []
    if not opts.paths and not opts.study:
        raise UserError("give run folders (PATH...) or --study DIR, e.g. `vae compare --study runs/betas`.")
    return c.find_runs(opts.paths, opts.study, skip=Path(opts.out) if opts.out else None)


def main(argv: list[str]) -> None:
    """``vae compare ...``: prints the tables; ``--out`` also writes the files."""
    opts = parser().parse_args(hyphenated(argv))
    if opts.html and not opts.out:
        raise UserError("--html writes <out>/report.html; add --out DIR.")
    if opts.out:
        from vae_lightning.runtime.outputs import check_output

        check_output("--out", opts.out, "dir")  # before any run folder is read
    runs, notes = load(opts)
    if not runs:
        raise UserError("found no runs; " + (" ".join(notes) if notes else "check the folders."))
    metrics = _split(opts.metrics) or c.default_metrics(runs)
    kept, skipped = c.select(runs, metrics)
    notes += skipped
    if not kept:
        for note in notes:
            print(f"note: {note}")
        raise UserError(f"no run has all of {', '.join(metrics)}; test the runs first or choose --metrics.")
    notes += c.flag_provenance(kept)
    group_keys, runs_t, groups, groups_t = tables(kept, metrics, _split(opts.group_by))
    partial = [r.name for r in kept if r.task is None or r.task["wall_time"] is None]
    if partial and any(r.task is not None for r in kept):  # mixed: say which wall time a row shows
        notes.append(
            f"wall_time_s of {len(partial)} of {len(kept)} runs is their training time only (no finished study task "
            "record); the others' is the whole task's."
        )
    print(
        f"{_n(len(kept), 'run')}\n{t.text_table(runs_t)}\n\n{_n(len(groups), 'group')} (mean ± sd over runs, n)\n"
        f"{t.text_table(groups_t)}"
    )
    for note in notes:
        print(f"note: {note}")
    if opts.out:
        source = (
            f"W&B {opts.wandb}, study {opts.study or opts.group}"
            if opts.wandb
            else " ".join([*opts.paths, *([f"--study {opts.study}"] if opts.study else [])])
        )
        write_outputs(Path(opts.out), kept, groups, group_keys, metrics, (runs_t, groups_t), notes, opts.html, source)


def tables(runs: list[c.Run], metrics: list[str], wanted: list[str] | None):
    """The group-by keys (``wanted``, else the default), the runs table, the groups and the groups table."""
    keys = c.differing_keys(runs)
    if wanted == ["none"]:
        group_keys = []
    else:
        group_keys = c.resolve_keys(wanted, runs) if wanted else c.default_group_keys(runs, keys)
    runs_t = t.run_table(runs, keys + [k for k in group_keys if k not in keys], metrics)
    groups = t.group_runs(runs, group_keys)
    return group_keys, runs_t, groups, t.group_table(groups, group_keys, metrics)


def analyses(runs, groups, group_keys, metrics) -> tuple[t.Table, t.Table]:
    """The variance shares (model, hyper-parameter, seed) and the Spearman matrix, as tables."""
    from vae_lightning.evaluation import compare_stats as s

    model_key = c.ENTRY_KEY if c.is_study(runs) else "model.class_path"
    setting = {id(r): g.values for g in groups for r in g.runs}
    shares = {
        m: s.variance_shares(runs, m, lambda r: r.config.get(model_key), lambda r: setting[id(r)]) for m in metrics
    }
    variance = t.Table(["metric", *s.FACTORS], [[m, *(shares[m][f] for f in s.FACTORS)] for m in metrics])
    matrix = s.spearman(runs, metrics)
    ranks = t.Table(["metric", *metrics], [[m, *map(float, matrix[i])] for i, m in enumerate(metrics)])
    return variance, ranks


def swept_keys(runs, group_keys) -> list[tuple[str, callable]]:
    """(key, series of a run) of each swept hyper-parameter: a study's grid keys (a line per entry);
    else the group-by keys (a line per value of the other group-by keys)."""
    if c.is_study(runs):
        keys = sorted({k for r in runs for k in r.task["point"]})
        return [(k, lambda r: r.config[c.ENTRY_KEY]) for k in keys]
    from vae_lightning.evaluation.compare_figures import label

    def others(key):
        rest = [k for k in group_keys if k != key]
        return lambda r: label(tuple(r.config.get(k) for k in rest), rest) if rest else ""

    return [(k, others(k)) for k in group_keys]


def write_outputs(out: Path, runs, groups, group_keys, metrics, tables, notes, html: bool, source: str) -> None:
    """compare.md, runs.csv, groups.csv, variance.csv, spearman.csv, the PNG figures and (``html``)
    report.html in ``out``; ``tables``: the run and group tables."""
    runs_t, groups_t = tables
    from vae_lightning.evaluation import compare_figures as f
    from vae_lightning.evaluation import compare_study_figures as sf

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"--out {str(out)!r}: cannot create the folder ({err.strerror or err}); choose another."
        ) from None
    variance, ranks = analyses(runs, groups, group_keys, metrics)
    for name, table in (
        ("runs.csv", runs_t),
        ("groups.csv", groups_t),
        ("variance.csv", variance),
        ("spearman.csv", ranks),
    ):
        columns, rows = t.csv_rows(table)
        with open(out / name, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            writer.writerows(rows)
    figures = []  # (path, caption)

    def add(name: str, written: bool, caption: str) -> None:
        if written:
            figures.append((out / name, caption))

    add(
        "metrics_by_group.png",
        sf.strips(groups, group_keys, metrics, out / "metrics_by_group.png"),
        "Each metric per group (seeds pooled): a dot per run, a bar at the mean.",
    )
    names = c.short_names([k for k, _ in swept_keys(runs, group_keys)], sorted({k for r in runs for k in r.config}))
    # a study's entries keep the colours of the strip plot (a colour per entry, in sorted order)
    entries = sorted({str(g.values[0]) for g in groups}, key=c.sort_value) if group_keys[:1] == [c.ENTRY_KEY] else []
    colours = {e: f"C{i % 10}" for i, e in enumerate(entries)}
    for key, series in swept_keys(runs, group_keys):
        name = f"metrics_vs_{names[key]}.png"
        add(
            name,
            sf.metrics_vs_key(runs, key, names[key], series, metrics, out / name, colours),
            f"Each metric against {key}, mean ± sd over seeds, for the models that sweep it.",
        )
    shares = {row[0]: dict(zip(variance.columns[1:], row[1:], strict=True)) for row in variance.rows}
    add(
        "variance_shares.png",
        sf.variance_bars(shares, out / "variance_shares.png"),
        "Share of each metric's variance (sum of squares over all runs) explained by the model, by its "
        "hyper-parameter within the model, and by the seed within a setting.",
    )
    matrix = [row[1:] for row in ranks.rows]
    import numpy as np

    add(
        "spearman.png",
        sf.spearman_map(np.array(matrix, dtype=float), metrics, len(runs), out / "spearman.png"),
        "Spearman rank correlation between the metrics across all runs.",
    )
    add(
        "learning_curves.png",
        f.learning_curves(groups, group_keys, out / "learning_curves.png"),
        "val/elbo against the optimizer step, mean ± sd over each group's runs.",
    )
    add(
        "rate_distortion.png",
        f.rate_distortion(groups, group_keys, out / "rate_distortion.png"),
        "Test KL (rate) against test reconstruction (distortion), one point per run.",
    )
    variance_heading = "Share of variance explained (model, hyper-parameter, seed)"
    md = ["# Groups (mean ± sd over runs, n)", "", t.markdown_table(groups_t), ""]
    md += [f"# {variance_heading}", "", t.markdown_table(variance), "", "# Runs", "", t.markdown_table(runs_t), ""]
    md += [f"- {n}" for n in notes] + [""] + [f"![{p.stem}]({p.name})" for p, _ in figures]
    (out / "compare.md").write_text("\n".join(md) + "\n")
    if html:
        sections = [
            (f"Groups ({len(groups)}, mean ± sd over runs, n)", groups_t),
            (variance_heading, variance),
            (f"Runs ({len(runs)})", runs_t),
        ]
        (out / "report.html").write_text(f.html_report("vae compare", source, sections, figures, notes))
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir() if p.is_file()))} to {out}")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
