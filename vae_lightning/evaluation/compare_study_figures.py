"""The figures of ``vae compare`` that read like those of a study's paper (Locatello et al. 2019):

- ``metrics_by_group.png``: per metric, every run's value as a dot on its group's row (the seeds of
  one setting side by side, a bar at their mean): the spread over seeds beside the differences
  between models. Groups on the vertical axis, so that their names read horizontally.
- ``metrics_vs_<key>.png``: per metric, mean ± sd over seeds against one swept numeric
  hyper-parameter, a line per model (study entry) that sweeps it; only for such keys.
- ``spearman.png``: the Spearman rank correlation between the metrics across all runs.
- ``variance_shares.png``: the share of each metric's variance that the model, the
  hyper-parameter and the seed explain (``compare_stats.variance_shares``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from vae_lightning.evaluation.compare import Run, model_class, sort_value
from vae_lightning.evaluation.compare_figures import (
    DPI,
    MARKERS,
    WIDTH,
    _pyplot,
    label,
    outside_legend,
    styles,
)
from vae_lightning.evaluation.compare_stats import FACTORS
from vae_lightning.evaluation.compare_table import Group


def _grid(plt, n: int, height: float, **kw):
    cols = min(4, n)
    rows = math.ceil(n / cols)
    size = (min(WIDTH, 1.5 + 3.3 * cols), rows * height + 0.6)
    fig, axes = plt.subplots(rows, cols, figsize=size, layout="constrained", squeeze=False, **kw)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)[:n]


def strips(groups: list[Group], keys: list[str], metrics: list[str], path: Path) -> bool:
    """Write one panel per metric: a row per group, a dot per run, a bar at the group's mean."""
    if not groups or not metrics:
        return False
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, axes = _grid(plt, len(metrics), 0.3 * len(groups) + 1.2, sharey=True)
    colours = [c for c, _ in styles(groups, keys)]
    names = [label(g.values, keys) for g in groups]
    for ax, metric in zip(axes, metrics, strict=True):
        for row, (group, colour) in enumerate(zip(groups, colours, strict=True)):
            xs = [x for r in group.runs if (x := r.metric(metric)) is not None and math.isfinite(x)]
            if not xs:
                continue
            # the runs of a group spread evenly across its row, so that equal values stay visible
            offsets = [0.0] if len(xs) == 1 else [-0.25 + 0.5 * i / (len(xs) - 1) for i in range(len(xs))]
            ax.scatter(xs, [row + o for o in offsets], s=16, color=colour, alpha=0.8, linewidths=0)
            ax.plot([sum(xs) / len(xs)], [row], "|", color="black", markersize=14, markeredgewidth=1.5)
        ax.set_title(metric, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.tick_params(labelsize=8)
    axes[0].set_yticks(range(len(groups)), names)
    axes[0].set_ylim(len(groups) - 0.5, -0.5)  # the first group on top
    fig.suptitle("Each metric per group: one dot per run (seed), the bar at their mean")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def line_labels(lines: dict[str, dict[float, list[Run]]], name: str) -> dict[str, str]:
    """Each line's legend label: its model, and where the lines' models are of several classes the
    parameter each one sweeps (``beta_vae (BetaVAE.beta)``), since one key then means different things."""
    classes = {
        line: sorted({model_class(r.config) for rs in points.values() for r in rs}) for line, points in lines.items()
    }
    if len({c for cs in classes.values() for c in cs}) < 2:
        return {line: line for line in lines}
    return {line: f"{line} ({'/'.join(f'{c}.{name}' for c in cs)})" for line, cs in classes.items()}


def metrics_vs_key(
    runs: list[Run],
    key: str,
    name: str,
    series: Callable[[Run], str],
    metrics: list[str],
    path: Path,
    colours: dict[str, str] | None = None,
) -> bool:
    """Write one panel per metric against the numeric ``key`` (shown as ``name``): mean ± sd over the
    runs at each value, one line per ``series`` value (a model) that has two values or more of it,
    coloured as ``colours`` says (the other figures' colour of that model), else in turn."""
    lines: dict[str, dict[float, list[Run]]] = {}
    for run in runs:
        value = run.config.get(key)
        if sort_value(value)[0] == 0:
            lines.setdefault(series(run), {}).setdefault(float(value), []).append(run)
    lines = {s: points for s, points in sorted(lines.items()) if len(points) >= 2}
    if not lines or not metrics:
        return False
    labels = line_labels(lines, name)
    plt = _pyplot()
    fig, axes = _grid(plt, len(metrics), 3.0)
    for ax, metric in zip(axes, metrics, strict=True):
        for i, (line, points) in enumerate(lines.items()):
            xs, means, sds = [], [], []
            for x, members in sorted(points.items()):
                ys = [y for r in members if (y := r.metric(metric)) is not None and math.isfinite(y)]
                if ys:
                    mean = sum(ys) / len(ys)
                    sd = math.sqrt(sum((y - mean) ** 2 for y in ys) / (len(ys) - 1)) if len(ys) > 1 else 0.0
                    xs, means, sds = [*xs, x], [*means, mean], [*sds, sd]
            marker = MARKERS[i // 10 % len(MARKERS)]
            colour = (colours or {}).get(line, f"C{i % 10}")
            ax.errorbar(xs, means, yerr=sds, marker=marker, color=colour, capsize=3, label=labels[line])
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    if any(lines):  # a single unnamed line needs no legend
        outside_legend(fig, *axes[0].get_legend_handles_labels(), below=True)
    fig.suptitle(f"Metrics against {name} (mean ± sd over seeds)")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def spearman_map(matrix, metrics: list[str], n_runs: int, path: Path) -> bool:
    """Write the (M, M) rank correlations as a heat map, each cell labelled; False for < 2 metrics
    or when no pair has a correlation (fewer than 3 runs)."""
    import numpy as np

    if len(metrics) < 2 or np.isnan(matrix).all():
        return False

    plt = _pyplot()
    size = min(WIDTH, 0.7 * len(metrics) + 3.5)
    fig, ax = plt.subplots(figsize=(size, size - 0.8), layout="constrained")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(len(metrics)):
        for j in range(len(metrics)):
            value = matrix[i, j]
            text = "—" if math.isnan(value) else f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if abs(value) > 0.6 else "black")
    ax.set_xticks(range(len(metrics)), metrics, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(len(metrics)), metrics, fontsize=8)
    fig.colorbar(image, ax=ax, label="Spearman rank correlation", shrink=0.8)
    ax.set_title(f"Rank correlation between metrics ({n_runs} runs)")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def variance_bars(shares: dict[str, dict[str, float]], path: Path) -> bool:
    """Write one stacked bar per metric: the shares of ``FACTORS`` (they add up to 1)."""
    shown = {m: s for m, s in shares.items() if not any(math.isnan(v) for v in s.values())}
    if not shown:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(shown) + 1.6), layout="constrained")
    names = list(shown)
    left = [0.0] * len(names)
    for i, factor in enumerate(FACTORS):
        widths = [shown[m][factor] for m in names]
        bars = ax.barh(names, widths, left=left, color=f"C{i}", label=factor)
        ax.bar_label(bars, [f"{100 * w:.0f}%" if w >= 0.08 else "" for w in widths], label_type="center", fontsize=7)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlim(0, 1)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlabel("share of the metric's variance over all runs")
    ax.tick_params(labelsize=8)
    ax.set_title("What each metric's variance is due to: the model, its hyper-parameter, the seed")
    outside_legend(fig, *ax.get_legend_handles_labels())
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True
