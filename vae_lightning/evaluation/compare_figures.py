"""The figures and the HTML report of ``vae compare`` (matplotlib, Agg: no display needed).

- ``learning_curves.png``: ``val/elbo`` (nats, higher is better) against optimizer step, one line
  per run, or the mean ± sd band of each group when groups hold several runs.
- ``rate_distortion.png``: test KL (rate, nats) against test recon (distortion, nats), one point
  per run, a colour and marker per group (Alemi et al. 2018, "Fixing a Broken ELBO", fig. 1).
- the figures of ``compare_study_figures``: each metric's spread over seeds, the swept
  hyper-parameters, the rank correlations and the variance shares.

Every figure is at most 1,350 px wide (``DPI``) so that the report shows it unscaled at 1,400 px;
legends sit outside the axes, never over the data.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from vae_lightning.evaluation.compare import CURVE_KEYS, ENTRY_KEY, POINT_KEY, Run, short_names, sort_value
from vae_lightning.evaluation.compare_table import Group, Table, shown

CURVE_METRIC = CURVE_KEYS[0]
DPI = 100
WIDTH = 13.0  # inches at DPI: the widest figure
VARIANTS = ("-", "--", ":", "-.")  # line styles of the groups that share a colour
MARKERS = ("o", "s", "^", "D", "v", "P")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label(values: tuple, keys: list[str]) -> str:
    """``beta=4, seed=1`` for a group's or run's values of ``keys`` ("all runs" for none); a study's
    entry and grid point read ``beta_vae, beta=4``; a key without a value (not of this model) is
    left out, a class path shows its class."""
    names = short_names(keys)
    parts = []
    for key, value in zip(keys, values, strict=False):
        if key in (ENTRY_KEY, POINT_KEY):
            parts += [] if value == "-" else [str(value)]
        elif value is not None:
            parts.append(f"{names[key]}={shown(key, value)}")
    return ", ".join(parts) or "all runs"


def styles(groups: list[Group], keys: list[str]) -> list[tuple[str, int]]:
    """(colour, variant) per group: with two or more keys a colour per value of the first (a study's
    entry) and a variant (line style, marker) per group within it; else a colour per group."""
    out, seen = [], {}
    for i, group in enumerate(groups):
        if len(keys) >= 2:
            first = sort_value(group.values[0])
            order = seen.setdefault(first, [len(seen), 0])
            out.append((f"C{order[0] % 10}", order[1]))
            order[1] += 1
        else:
            out.append((f"C{i % 10}", i // 10))
    return out


def outside_legend(fig, handles, labels, below: bool = False) -> None:
    """The legend right of the axes in columns of 16 (``below``: under them, in up to 3 columns);
    constrained layout makes room for it."""
    if handles and below:
        fig.legend(handles, labels, loc="outside lower center", fontsize=8, ncols=min(3, len(handles)))
    elif handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, ncols=math.ceil(len(handles) / 16))


def _curve(run: Run, metric: str) -> tuple[list[float], list[float]]:
    points = sorted((r["step"], r[metric]) for r in run.history if metric in r and "step" in r)
    return [s for s, _ in points], [v for _, v in points]


def learning_curves(groups: list[Group], keys: list[str], path: Path, metric: str = CURVE_METRIC) -> bool:
    """Write the learning-curve figure; False (nothing written) when no run has a history."""
    if not any(_curve(r, metric)[0] for g in groups for r in g.runs):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 5), layout="constrained")
    bands = any(len(g.runs) > 1 for g in groups)
    for group, (color, variant) in zip(groups, styles(groups, keys), strict=True):
        line = VARIANTS[variant % len(VARIANTS)]
        with_curves = [(run, c) for run in group.runs if (c := _curve(run, metric))[0]]
        curves = [c for _, c in with_curves]
        if not bands:
            for run, (steps, values) in with_curves:
                ax.plot(steps, values, line, color=color, label=label(group.values, keys) if keys else run.name)
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
        ax.plot(common, mean, line, color=color, label=f"{label(group.values, keys)} (n={len(curves)})")
        ax.fill_between(
            common,
            [m - s for m, s in zip(mean, sd, strict=False)],
            [m + s for m, s in zip(mean, sd, strict=False)],
            color=color,
            alpha=0.15,
            linewidth=0,
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"{metric} (nats, higher is better)")
    ax.set_title("Learning curves" + (" (mean ± sd over runs)" if bands else ""))
    ax.grid(alpha=0.3)
    outside_legend(fig, *ax.get_legend_handles_labels())
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def rate_distortion(groups: list[Group], keys: list[str], path: Path) -> bool:
    """Write the rate–distortion figure, a colour and marker per group (the legend names it); False
    when no run has test/kl and test/recon."""
    if not any(r.metric("test/kl") is not None and r.metric("test/recon") is not None for g in groups for r in g.runs):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5.5), layout="constrained")
    for i, (group, (color, variant)) in enumerate(zip(groups, styles(groups, keys), strict=True)):
        points = [(r.metric("test/kl"), r.metric("test/recon"), r) for r in group.runs]
        points = [(x, y, r) for x, y, r in points if x is not None and y is not None]
        if not points:
            continue
        name = label(group.values, keys) if keys else (points[0][2].name if len(points) == 1 else f"group {i}")
        ax.scatter(
            [p[0] for p in points],
            [p[1] for p in points],
            s=30,
            color=color,
            marker=MARKERS[variant % len(MARKERS)],
            label=name,
            alpha=0.85,
        )
    ax.set_xlabel("rate: test/kl (nats)")
    ax.set_ylabel("distortion: test/recon (nats)")
    ax.set_title("Rate–distortion plane (one point per run)")
    ax.grid(alpha=0.3)
    outside_legend(fig, *ax.get_legend_handles_labels())
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


# ---- HTML ------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 2px 5px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; white-space: normal; } td:first-child, th:first-child { text-align: left; }
.scroll { overflow-x: auto; max-width: 100%; }
tr:nth-child(even) td { background: #fafafa; }
td.run { white-space: normal; max-width: 22em; } td.flag { color: #b00; font-weight: bold; }
.notes li { color: #8a5a00; } figure { margin: 0 0 1.5em 0; }
img { max-width: 100%; border: 1px solid #ddd; }
.source { color: #555; font-size: 13px; } figcaption { font-size: 12px; color: #555; }
"""


def html_table(table: Table) -> str:
    # many metric columns: headers may wrap after "/", "_" and ".", and a table wider than the page
    # scrolls inside its own box instead of the page
    breaks = {"/": "/<wbr>", "_": "_<wbr>", ".": ".<wbr>"}
    head = "".join(f"<th>{''.join(breaks.get(ch, ch) for ch in html.escape(c))}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for column, value in zip(table.columns, row, strict=False):
            css = ' class="flag"' if column == "flags" and value else ""
            text = html.escape(shown(column, value))
            if column == "run":  # long task names may wrap after each "key=value,"
                css, text = ' class="run"', text.replace(",", ",<wbr>")
            cells.append(f"<td{css}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def html_report(
    title: str, source: str, tables: list[tuple[str, Table]], figures: list[tuple[Path, str]], notes: list[str]
) -> str:
    """A single self-contained HTML page: notes, tables, and the PNGs (with their captions) embedded
    as data URIs, each at its own size (at most 1,350 px wide)."""
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
    for fig, caption in figures:
        data = base64.b64encode(fig.read_bytes()).decode()
        parts.append(
            f"<figure><img src='data:image/png;base64,{data}' alt='{fig.stem}'>"
            f"<figcaption>{html.escape(fig.name)}: {html.escape(caption)}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
