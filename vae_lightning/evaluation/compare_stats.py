"""The two headline analyses of Locatello et al. (2019, "Challenging Common Assumptions in the
Unsupervised Learning of Disentangled Representations") over the runs of ``vae compare``:

- ``spearman``: the rank correlation between every two metrics across all runs (their fig. 2);
- ``variance_shares``: how much of each metric's variance the model, its hyper-parameter and the
  seed explain (their section 5: the seed and the hyper-parameters matter more than the model).

Plain numpy, no scipy: ranks, then Pearson; sums of squares from their definition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable

import numpy as np

from vae_lightning.evaluation.compare import Run

FACTORS = ("model", "hyper-parameter", "seed")


def ranks(xs: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``xs`` (n,), ties sharing the mean of their ranks."""
    order = np.argsort(xs, kind="stable")
    out = np.empty(len(xs))
    out[order] = np.arange(1, len(xs) + 1)
    for value in np.unique(xs):
        tied = xs == value
        out[tied] = out[tied].mean()
    return out


def spearman(runs: list[Run], metrics: list[str]) -> np.ndarray:
    """(M, M) Spearman rank correlation of ``metrics`` over the runs that have each pair (finite
    values); nan where a metric is constant there or fewer than 3 runs have the pair."""
    values = np.array([[_value(r, m) for m in metrics] for r in runs], dtype=float).reshape(len(runs), len(metrics))
    out = np.full((len(metrics), len(metrics)), math.nan)
    for i in range(len(metrics)):
        for j in range(len(metrics)):
            both = np.isfinite(values[:, i]) & np.isfinite(values[:, j])
            if both.sum() < 3:
                continue
            a, b = ranks(values[both, i]), ranks(values[both, j])
            a, b = a - a.mean(), b - b.mean()
            norm = math.sqrt(float((a * a).sum() * (b * b).sum()))
            if norm > 0:
                out[i, j] = float((a * b).sum()) / norm
    return out


def variance_shares(
    runs: list[Run], metric: str, model: Callable[[Run], Hashable], setting: Callable[[Run], Hashable]
) -> dict[str, float]:
    """The share of ``metric``'s total sum of squares over the runs that each factor explains, in the
    nested design of a study (the hyper-parameter values belong to one model, the seeds to one
    setting): with y the metric, ȳ its mean, ȳ_m the mean of model m's runs and ȳ_s that of
    setting s (a model and its hyper-parameter values, ``setting``; nested in ``model``),

        model           = Σ_m n_m (ȳ_m − ȳ)² / SS     the between-model sum of squares
        hyper-parameter = Σ_s n_s (ȳ_s − ȳ_m(s))² / SS   between settings of one model
        seed            = Σ_i (y_i − ȳ_s(i))² / SS     within a setting: what only the seed changes

    with SS = Σ_i (y_i − ȳ)²; the three add up to 1. All nan when SS is 0 or no run has the metric."""
    rows = [(model(r), (model(r), setting(r)), v) for r in runs if math.isfinite(v := _value(r, metric))]
    y = np.array([v for _, _, v in rows])
    total = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    if total <= 0:
        return dict.fromkeys(FACTORS, math.nan)

    def means(level: int) -> np.ndarray:  # each run's mean over the runs that share its level's value
        keys = [row[level] for row in rows]
        mean = {k: y[[i for i, q in enumerate(keys) if q == k]].mean() for k in set(keys)}
        return np.array([mean[k] for k in keys])

    model_mean, setting_mean = means(0), means(1)
    return {
        "model": float(((model_mean - y.mean()) ** 2).sum()) / total,
        "hyper-parameter": float(((setting_mean - model_mean) ** 2).sum()) / total,
        "seed": float(((y - setting_mean) ** 2).sum()) / total,
    }


def _value(run: Run, metric: str) -> float:
    value = run.metric(metric)
    return math.nan if value is None else value
