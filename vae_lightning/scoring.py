"""Anomaly scores per input, and the ``vae predict`` writer that saves them as CSV.

Every score is "higher = more anomalous" except ``log_pz``, and in nats unless said otherwise:

- ``neg_elbo``: −ELBO = recon + kl (one z sample);
- ``nll_iw``: −log p̂_k(x), the importance-weighted bound with the model's ``iw_samples``;
- ``recon``: −log p(x|z), z ~ q(z|x), and ``kl``: KL(q(z|x) || p(z));
- ``sq_error``: Σ_pixels (x − E[x|z=μ(x)])², the squared reconstruction error of the mean
  reconstruction, in squared data units (pixels in [0, 1]);
- ``log_pz``: log N(μ(x); 0, I), the log-density of the posterior mean under the prior (low:
  the input is encoded far from where the prior puts its mass).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor
from torch.distributions import Normal

from vae_lightning.errors import UserError
from vae_lightning.metrics import iw_log_likelihood

SCORES = ("neg_elbo", "nll_iw", "recon", "kl", "sq_error", "log_pz")


@torch.no_grad()
def anomaly_scores(model, x: Tensor, k: int) -> dict[str, Tensor]:
    """Scores (each (B,), float32) of a batch x (B, C, H, W) under a ``VAE``; see the module doc."""
    recon, kl_dims, _ = model(x)
    kl = kl_dims.sum(1)
    mu, _ = model.encoder(x)
    mean = model.likelihood.mean(model.decoder(mu)).float()
    prior = Normal(torch.zeros_like(mu, dtype=torch.float32), 1.0)
    return {
        "neg_elbo": recon + kl,
        "nll_iw": -iw_log_likelihood(model, x, k),
        "recon": recon,
        "kl": kl,
        "sq_error": (x.float() - mean).square().flatten(1).sum(1),
        "log_pz": prior.log_prob(mu.float()).sum(1),
    }


class AnomalyScores(BasePredictionWriter):
    """Writes one CSV row per predicted input: ``index`` (position in the predict split, per
    device), the label or ground-truth factors when the data has them, then the scores
    (neg_elbo, nll_iw, recon, kl, sq_error, log_pz; see ``vae_lightning.scoring``).

    The file appears only when prediction finishes: rows are written to a temporary file that
    is renamed at the end, so a failed run leaves no partial CSV. With several devices each
    writes ``<stem>.rank<r>.csv``.

    Args:
        path: the CSV file; None: ``<default_root_dir>/scores.csv``.
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        if path is not None and not str(path).endswith(".csv"):
            raise UserError(f"scores.path must name a .csv file, got {path!r}.")
        self.path = path
        self._rows: list[dict] = []

    def _target(self, trainer: Trainer) -> Path:
        path = Path(self.path) if self.path else Path(trainer.default_root_dir) / "scores.csv"
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}.csv")
        return path

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        y = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        names = getattr(trainer.datamodule, "factor_names", None)
        cols = {name: prediction[name].float().cpu().tolist() for name in SCORES}
        for i in range(len(cols["nll_iw"])):
            row = {"index": len(self._rows)}
            if torch.is_tensor(y) and y.dim() == 1:
                row["label"] = int(y[i])
            elif torch.is_tensor(y) and y.dim() == 2:
                keys = names if names and len(names) == y.shape[1] else [f"y{j}" for j in range(y.shape[1])]
                row.update({key: int(v) for key, v in zip(keys, y[i].tolist())})
            row.update({name: f"{cols[name][i]:.6g}" for name in SCORES})
            self._rows.append(row)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._rows:
            return
        path = self._target(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(self._rows[0]))
                writer.writeheader()
                writer.writerows(self._rows)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        print(f"vae: wrote {len(self._rows)} rows of anomaly scores to {path}")
        self._rows = []
