"""The figures and the HTML report of ``vae compare`` (matplotlib, Agg: no display needed).

- ``learning_curves.png``: ``val/elbo`` (nats, higher is better) against optimizer step, one line
  per run, or the mean ± sd band of each group when groups hold several runs.
- ``rate_distortion.png``: test KL (rate, nats) against test recon (distortion, nats), one point
  per run, labelled by its swept values (Alemi et al. 2018, "Fixing a Broken ELBO", fig. 1).
- ``metrics_vs_<key>.png``: each metric against the first group-by key, mean ± sd over the
  group's runs, one line per value of the other group-by keys.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from vae_lightning.evaluation.compare import CURVE_KEYS, Group, Run, Table, fmt, short_names, sort_value

CURVE_METRIC = CURVE_KEYS[0]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label(values: tuple, keys: list[str]) -> str:
    """``beta=4, seed=1`` for a group's or run's values of ``keys`` ("all runs" for none)."""
    names = short_names(keys)
    return ", ".join(f"{names[k]}={fmt(v)}" for k, v in zip(keys, values, strict=False)) or "all runs"


def _curve(run: Run, metric: str) -> tuple[list[float], list[float]]:
    points = sorted((r["step"], r[metric]) for r in run.history if metric in r and "step" in r)
    return [s for s, _ in points], [v for _, v in points]


def learning_curves(groups: list[Group], keys: list[str], path: Path, metric: str = CURVE_METRIC) -> bool:
    """Write the learning-curve figure; False (nothing written) when no run has a history."""
    if not any(_curve(r, metric)[0] for g in groups for r in g.runs):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.5), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    bands = any(len(g.runs) > 1 for g in groups)
    for i, group in enumerate(groups):
        color = colors[i % len(colors)]
        with_curves = [(run, c) for run in group.runs if (c := _curve(run, metric))[0]]
        curves = [c for _, c in with_curves]
        if not bands:
            for run, (steps, values) in with_curves:
                ax.plot(steps, values, color=color, label=label(group.values, keys) if keys else run.name)
            continue
        common = sorted(set.intersection(*(set(s) for s, _ in curves))) if curves else []
        if not common:
            continue
        table = [[dict(zip(s, v, strict=False))[step] for s, v in curves] for step in common]  # (steps, runs)
        mean = [sum(row) / len(row) for row in table]
        sd = [
            math.sqrt(sum((x - m) ** 2 for x in row) / (len(row) - 1)) if len(row) > 1 else 0.0
            for row, m in zip(table, mean, strict=False)
        ]
        ax.plot(common, mean, color=color, label=f"{label(group.values, keys)} (n={len(curves)})")
        ax.fill_between(
            common,
            [m - s for m, s in zip(mean, sd, strict=False)],
            [m + s for m, s in zip(mean, sd, strict=False)],
            color=color,
            alpha=0.25,
            linewidth=0,
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"{metric} (nats, higher is better)")
    ax.set_title("Learning curves" + (" (mean ± sd over runs)" if bands else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def rate_distortion(groups: list[Group], keys: list[str], label_keys: list[str], path: Path) -> bool:
    """Write the rate–distortion figure, a colour per group and each point labelled by its values
    of ``label_keys``; False when no run has test/kl and test/recon."""
    if not any(r.metric("test/kl") is not None and r.metric("test/recon") is not None for g in groups for r in g.runs):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.5), layout="constrained")
    names = short_names(label_keys)
    for i, group in enumerate(groups):
        points = [(r.metric("test/kl"), r.metric("test/recon"), r) for r in group.runs]
        points = [(x, y, r) for x, y, r in points if x is not None and y is not None]
        if not points:
            continue
        ax.scatter(
            [p[0] for p in points],
            [p[1] for p in points],
            s=30,
            color=f"C{i % 10}",
            label=label(group.values, keys) if keys else None,
        )
        # the group is in the colour: label each point by its other values (the seed, say), above
        # and below in turn, so that the runs of one group, often close together, stay readable
        own = [k for k in label_keys if k not in keys] or label_keys
        for j, (x, y, run) in enumerate(sorted(points, key=lambda p: p[1])):
            text = ", ".join(f"{names[k]}={fmt(run.config.get(k))}" for k in own) or run.name
            ax.annotate(text, (x, y), xytext=(5, 3 if j % 2 else -9), textcoords="offset points", fontsize=7)
    ax.set_xlabel("rate: test/kl (nats)")
    ax.set_ylabel("distortion: test/recon (nats)")
    ax.set_title("Rate–distortion plane (one point per run)")
    ax.grid(alpha=0.3)
    ax.margins(x=0.4, y=0.15)  # room for the labels right of the points
    if keys:
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def metrics_vs_key(groups: list[Group], keys: list[str], metrics: list[str], path: Path) -> bool:
    """Write one panel per metric against ``keys[0]``; False when there is no group-by key."""
    if not keys or not metrics:
        return False
    plt = _pyplot()
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), layout="constrained", squeeze=False)
    x_name = short_names(keys)[keys[0]]
    xs = sorted({g.values[0] for g in groups}, key=sort_value)
    numeric = all(sort_value(x)[0] == 0 for x in xs)
    series: dict[tuple, list[Group]] = {}
    for g in groups:
        series.setdefault(g.values[1:], []).append(g)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for rest, members in series.items():
            members = sorted(members, key=lambda g: sort_value(g.values[0]))
            stats = [g.stats(metric) for g in members]
            pos = [g.values[0] if numeric else xs.index(g.values[0]) for g in members]
            ax.errorbar(
                pos,
                [s[0] for s in stats],
                yerr=[0 if math.isnan(s[1]) else s[1] for s in stats],
                marker="o",
                capsize=3,
                label=label(rest, keys[1:]) if rest else None,
            )
        if not numeric:
            ax.set_xticks(range(len(xs)), [fmt(x) for x in xs])
        ax.set_xlabel(x_name)
        ax.set_title(metric, fontsize=10)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(f"Metrics against {x_name} (mean ± sd over runs)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---- HTML ------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; white-space: normal; } td:first-child, th:first-child { text-align: left; }
.scroll { overflow-x: auto; max-width: 100%; }
tr:nth-child(even) td { background: #fafafa; }
td.run { white-space: normal; max-width: 22em; } td.flag { color: #b00; font-weight: bold; }
.notes li { color: #8a5a00; } figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
img { max-width: 600px; width: 100%; border: 1px solid #ddd; }
figure.wide img { max-width: 1300px; }
.source { color: #555; font-size: 13px; } figcaption { font-size: 12px; color: #555; }
"""


def html_table(table: Table) -> str:
    # many metric columns: headers may wrap after "/" and "_", and a table wider than the page
    # scrolls inside its own box instead of the page
    head = "".join(f"<th>{html.escape(c).replace('/', '/<wbr>').replace('_', '_<wbr>')}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for column, value in zip(table.columns, row, strict=False):
            css = ' class="flag"' if column == "flags" and value else ""
            text = html.escape(fmt(value))
            if column == "run":  # long task names may wrap after each "key=value,"
                css, text = ' class="run"', text.replace(",", ",<wbr>")
            cells.append(f"<td{css}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def html_report(title: str, source: str, tables: list[tuple[str, Table]], figures: list[Path], notes: list[str]) -> str:
    """A single self-contained HTML page: notes, tables, and the PNGs embedded as data URIs."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p class='source'>{html.escape(source)}</p>",
    ]
    if notes:
        parts.append("<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    for heading, table in tables:
        parts.append(f"<h2>{html.escape(heading)}</h2>{html_table(table)}")
    if figures:
        parts.append("<h2>Figures</h2>")
    for fig in figures:
        data = base64.b64encode(fig.read_bytes()).decode()
        wide = " class='wide'" if fig.stem.startswith("metrics_vs_") else ""
        parts.append(
            f"<figure{wide}><img src='data:image/png;base64,{data}' alt='{fig.stem}'>"
            f"<figcaption>{html.escape(fig.name)}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
