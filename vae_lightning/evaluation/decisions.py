"""Anomaly decisions for ``vae predict``: a threshold on one score, chosen on held-out normal
data at a target false-positive rate, and how well it separates labelled anomalies.

- ``threshold_at_fpr(normal, fpr)``: the (1 − fpr) empirical quantile of the scores of normal
  inputs; an input is flagged when its score is above it, so at most a share ``fpr`` of those
  normal inputs is flagged.
- ``auroc(scores, positive)``: the area under the ROC curve, computed as the Mann–Whitney
  statistic P(score of an anomaly > score of a normal input), ties counted one half.
- ``rates(flag, positive)``: the achieved true- and false-positive rates of the flags.

Every score is "higher = more anomalous" except ``log_pz``; ``orient`` turns that one around,
so the threshold is applied to −log_pz (and reported in log_pz's own units with ``flag_if``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae_lightning.errors import UserError

LOW_IS_ANOMALOUS = ("log_pz",)


def orient(name: str, scores: Tensor) -> Tensor:
    """``scores`` with "higher = more anomalous" (float64)."""
    return -scores.double() if name in LOW_IS_ANOMALOUS else scores.double()


def threshold_at_fpr(normal: Tensor, fpr: float) -> float:
    """The smallest order statistic t of the (oriented) normal scores (N,) with at most
    floor(fpr · N) of them above t."""
    if not 0 < fpr < 1:
        raise UserError(f"scores.fpr must be in (0, 1), the share of normal inputs flagged, got {fpr}.")
    s = normal.double().sort().values
    allowed = math.floor(fpr * len(s))
    return float(s[len(s) - 1 - allowed])


def auroc(scores: Tensor, positive: Tensor) -> float:
    """AUROC of (oriented) scores (N,) for the boolean anomaly indicator ``positive`` (N,)."""
    _, inverse, counts = torch.unique(scores.double(), return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = (ends - (counts.double() - 1) / 2)[inverse]  # 1-based ranks, ties averaged
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def rates(flag: Tensor, positive: Tensor) -> dict[str, float]:
    """Shares of anomalies (tpr) and of normal inputs (fpr) that are flagged."""
    return {"tpr": float(flag[positive].double().mean()), "fpr": float(flag[~positive].double().mean())}


def check_labels(labels: Tensor | None, anomalous: list[int], data_name: str) -> Tensor:
    """The boolean anomaly indicator of the predicted inputs' labels; both kinds must occur."""
    if labels is None:
        raise UserError(f"scores.anomalous_labels needs class labels, but {data_name} has none; leave it out.")
    positive = torch.isin(labels, torch.tensor(anomalous, dtype=labels.dtype))
    if not positive.any() or positive.all():
        have = sorted(set(labels.tolist()))
        what = "no" if not positive.any() else "only"
        raise UserError(
            f"scores.anomalous_labels {anomalous}: the predict split has {what} inputs with these labels "
            f"(its labels: {have}); choose labels that occur there, not all of them."
        )
    return positive


def report(
    name: str, scores: Tensor, threshold: float | None, positive: Tensor | None, fpr: float | None, val_count: int
) -> dict:
    """The JSON record of the decision: score, threshold, and (with labels) AUROC and rates."""
    out: dict = {"score": name}
    if threshold is not None:
        flag_if = "below" if name in LOW_IS_ANOMALOUS else "above"
        value = -threshold if flag_if == "below" else threshold
        out.update(threshold=value, flag_if=flag_if, target_fpr=fpr, fit_on="val", val_inputs=val_count)
    if positive is not None:
        oriented = orient(name, scores)
        out.update(anomalies=int(positive.sum()), normal=int((~positive).sum()), auroc=auroc(oriented, positive))
        if threshold is not None:
            out.update(rates(oriented > threshold, positive))
    return out
