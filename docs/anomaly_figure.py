"""Histograms of two anomaly scores from a `vae predict` CSV, one class against the rest.

    python docs/anomaly_figure.py scores.csv --label 9 --out docs/images/anomaly_scores.png

Made the README's figure from the CSV of tests/test_anomaly.py (MLP VAE, 800 steps on MNIST 0–8).
"""

from __future__ import annotations

import argparse
import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torchmetrics.functional.classification import binary_auroc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv")
    p.add_argument("--label", type=int, default=9, help="the held-out class (the anomalies)")
    p.add_argument("--scores", nargs="+", default=["nll_iw", "neg_llr"])
    p.add_argument("--out", default="anomaly_scores.png")
    a = p.parse_args()
    rows = list(csv.DictReader(open(a.csv)))
    anomalous = torch.tensor([int(r["label"]) == a.label for r in rows])
    fig, axes = plt.subplots(1, len(a.scores), figsize=(5 * len(a.scores), 3.2))
    for ax, name in zip(axes, a.scores):
        s = torch.tensor([float(r[name]) for r in rows], dtype=torch.float64)
        auroc = binary_auroc((s - s.min()) / (s.max() - s.min()), anomalous.long()).item()
        bins = torch.linspace(s.min().item(), s.max().item(), 50).tolist()
        ax.hist(s[~anomalous].tolist(), bins=bins, alpha=0.6, density=True, label="other digits")
        ax.hist(s[anomalous].tolist(), bins=bins, alpha=0.6, density=True, label=f"held-out {a.label}s")
        ax.set_title(f"{name}: AUROC {auroc:.2f}")
        ax.set_xlabel("nats (higher = more anomalous)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(a.out, dpi=100)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
