"""Anomaly scores per input, and the ``vae predict`` writer that saves them as CSV.

Every score is "higher = more anomalous" except ``log_pz``, and in nats unless said otherwise:

- ``neg_elbo``: −ELBO = recon + kl (one z sample);
- ``nll_iw``: −log p̂_k(x), the importance-weighted bound with the model's ``iw_samples``;
- ``recon``: −log p(x|z), z ~ q(z|x), and ``kl``: KL(q(z|x) || p(z));
- ``sq_error``: Σ_pixels (x − E[x|z=μ(x)])², the squared reconstruction error of the mean
  reconstruction, in squared data units (pixels in [0, 1]); for an autoregressive decoder
  E[x_i | x_<i, z=μ(x)], each pixel's mean given the input's pixels before it (one pass);
- ``log_pz``: log p(μ(x)), the log-density of the posterior mean under the model's prior (low:
  the input is encoded far from where the prior puts its mass);
- ``nll_pixels``: −log p(x) under a background model that treats every pixel as independent,
  fit to the training split (``metrics.PixelMarginals``);
- ``neg_llr``: nll_iw − nll_pixels = −log [p̂(x) / p_pixels(x)], the negative log-likelihood
  ratio of the VAE to that background model.

Why ``neg_llr``: a likelihood alone mostly measures how simple an input is (little ink, few
strokes), so inputs unlike the training data can score as *more* likely than typical ones
(Nalisnick et al. 2019). Dividing by a background model that captures only that simplicity
leaves what the VAE learned about the training data (the likelihood-ratio idea of Ren et al.
2019, and Serrà et al. 2020's complexity correction, here with the simplest background). On
MNIST with the 9s held out, nll_iw separates 9s from the other digits at AUROC ≈ 0.5 and
neg_llr at ≈ 0.7 (README, "Anomaly scores").
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor
from typing_extensions import override

from vae_lightning.data.base import images
from vae_lightning.errors import UserError
from vae_lightning.evaluation import decisions
from vae_lightning.evaluation.metrics import PixelMarginals, iw_log_likelihood
from vae_lightning.nets import decoder_output
from vae_lightning.runtime.atomic import atomic_open
from vae_lightning.runtime.fallback import write_or_keep

SCORES = ("neg_elbo", "nll_iw", "recon", "kl", "sq_error", "log_pz")
BACKGROUND_SCORES = ("nll_pixels", "neg_llr")


@torch.no_grad()
def anomaly_scores(model, x: Tensor, k: int) -> dict[str, Tensor]:
    """Scores (each (B,), float32) of a batch x (B, C, H, W) under a ``VAE``; see the module doc.
    One encoder pass: the forward record's q(z|x) serves every score."""
    f = model(x)
    mean = model.likelihood.mean(decoder_output(model.decoder, f.mu, x)).float()
    return {
        "neg_elbo": f.recon + f.kl,
        "nll_iw": -iw_log_likelihood(model, x, k, first=f),
        "recon": f.recon,
        "kl": f.kl,
        "sq_error": (x.float() - mean).square().flatten(1).sum(1),
        "log_pz": model.prior.log_prob(f.mu.float()),
    }


class AnomalyScores(BasePredictionWriter):
    """Writes the anomaly scores of vae predict as CSV, one row per input.

    Writes one CSV row per predicted input: ``index`` (position in the predict split, per
    device), the label or ground-truth factors when the data has them, then the scores
    (neg_elbo, nll_iw, recon, kl, sq_error, log_pz, nll_pixels, neg_llr; see
    ``vae_lightning.evaluation.scoring``). The background model of nll_pixels and neg_llr is fit at the
    start, on up to ``background_images`` images of the data module's training split.

    The file appears only when prediction finishes: rows are written to a temporary file that
    is renamed at the end, so a failed run leaves no partial CSV. With several devices each
    writes ``<stem>.rank<r>.csv``.

    Decisions (``vae_lightning.evaluation.decisions``, one device): with ``fpr``, the threshold on
    ``score`` is chosen on the validation split (held-out normal data) so that a share ``fpr``
    of it is flagged; every row gets ``flag`` (1: anomalous), and ``<stem>.json`` beside the CSV
    records the score, the threshold and the target rate. With ``anomalous_labels`` the JSON
    also holds the AUROC of ``score`` and the achieved true- and false-positive rates.

    Args:
        path: the CSV file; None: ``<default_root_dir>/scores.csv``.
        background_images: training images (over all devices) the background model is fit
            to; 0 leaves out nll_pixels and neg_llr.
        fpr: target false-positive rate in (0, 1) of the flags; None: no flag column.
        score: the score the decision uses; None: neg_llr (nll_iw when background_images is 0).
        anomalous_labels: class labels of the predict split that count as anomalies.
    """

    def __init__(
        self,
        path: str | None = None,
        background_images: int = 50_000,
        fpr: float | None = None,
        score: str | None = None,
        anomalous_labels: int | list[int] | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        if path is not None and not str(path).endswith(".csv"):
            raise UserError(f"scores.path must name a .csv file, got {path!r}.")
        if background_images < 0:
            raise UserError(f"scores.background_images must be >= 0 (0 turns neg_llr off), got {background_images}.")
        if fpr is not None:
            decisions.threshold_at_fpr(torch.zeros(1), fpr)  # refuses a rate outside (0, 1)
        names = SCORES + (BACKGROUND_SCORES if background_images else ())
        score = score or ("neg_llr" if background_images else "nll_iw")
        if score not in names:
            raise UserError(f"scores.score must be one of {', '.join(names)}, got {score!r}.")
        self.path, self.background_images = path, background_images
        if isinstance(anomalous_labels, int):
            anomalous_labels = [anomalous_labels]
        self.fpr, self.score, self.anomalous_labels = fpr, score, anomalous_labels
        self._rows: list[dict] = []
        self._background = None  # torch.distributions: log p_pixels(x), (B,)
        self._threshold: float | None = None  # on the oriented score (decisions.orient)
        self._val_count = 0
        self._decided: list[Tensor] = []  # the decision score of every row, float64

    def _target(self, trainer: Trainer) -> Path:
        path = Path(self.path) if self.path else Path(trainer.default_root_dir) / "scores.csv"
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}.csv")
        return path

    @property
    def deciding(self) -> bool:
        return self.fpr is not None or self.anomalous_labels is not None

    def check_data(self, datamodule, world_size: int) -> None:
        """Refuse a decision this run cannot make (the CLI's pre-flight calls it before anything
        is written, and checks the labels of the inputs to be scored with ``decisions.check_labels``)."""
        if self.deciding and world_size > 1:
            raise UserError("scores.fpr and scores.anomalous_labels need one device; set trainer.devices 1.")
        if self.anomalous_labels is not None and getattr(datamodule, "factor_names", None):
            raise UserError(
                f"scores.anomalous_labels needs class labels, but {type(datamodule).__name__} "
                "has ground-truth factors; leave it out."
            )

    @override
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows, self._decided, self._threshold = [], [], None
        self.check_data(trainer.datamodule, trainer.world_size)
        self._background = self._fit_background(trainer, pl_module) if self.background_images else None
        if self.fpr is not None:
            self._threshold = self._fit_threshold(trainer, pl_module)

    def _scores(self, pl_module: LightningModule, x: Tensor, prediction: dict | None = None) -> dict[str, Tensor]:
        scores = dict(prediction) if prediction is not None else anomaly_scores(pl_module, x, pl_module.iw_samples)
        if self._background is not None:
            scores["nll_pixels"] = -self._background.log_prob(x.float())
            scores["neg_llr"] = scores["nll_iw"] - scores["nll_pixels"]
        return scores

    def _fit_threshold(self, trainer: Trainer, pl_module: LightningModule) -> float:
        dm = trainer.datamodule
        dm.setup("fit")
        loader = dm.val_dataloader() if dm is not None else None
        if loader is None or len(loader) == 0:
            raise UserError(
                "scores.fpr needs held-out normal data in the validation split, which is empty; "
                "set data.init_args.val_size > 0."
            )
        normal = []
        for batch in loader:
            x = images(batch).to(pl_module.device)
            normal.append(decisions.orient(self.score, self._scores(pl_module, x)[self.score]).cpu())
        normal = torch.cat(normal)
        self._val_count = len(normal)
        threshold = decisions.threshold_at_fpr(normal, self.fpr)
        print(
            f"vae: threshold on {self.score} at a {self.fpr:g} false-positive rate, fit to {len(normal)} "
            f"validation inputs: {threshold if self.score not in decisions.LOW_IS_ANOMALOUS else -threshold:.6g}"
        )
        return threshold

    def _fit_background(self, trainer: Trainer, pl_module: LightningModule):
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "train_dataloader"):
            raise UserError(
                "vae predict: neg_llr needs the data module's training split; pass --data, "
                "or set --scores.background_images 0 to leave neg_llr out."
            )
        dm.setup("fit")
        marginals = PixelMarginals(pl_module.image_shape, binary=pl_module.likelihood.discrete).to(pl_module.device)
        per_rank = -(-self.background_images // trainer.world_size)
        seen = 0
        for batch in dm.train_dataloader():
            x = images(batch)
            marginals.update(x[: per_rank - seen].to(pl_module.device))
            seen += len(x)
            if seen >= per_rank:
                break
        if trainer.is_global_zero:
            print(
                f"vae: background model for neg_llr fit to {min(seen, per_rank) * trainer.world_size} training images"
            )
        return marginals.compute()  # summed over ranks by torchmetrics

    @override
    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        y = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        factor_names = getattr(trainer.datamodule, "factor_names", None)
        x = images(batch)
        scores = self._scores(pl_module, x, prediction)
        decided = decisions.orient(self.score, scores[self.score]).cpu()
        self._decided.append(decided)
        flags = (decided > self._threshold).tolist() if self._threshold is not None else None
        columns = [name for name in (*SCORES, *BACKGROUND_SCORES) if name in scores]
        cols = {name: scores[name].float().cpu().tolist() for name in columns}
        for i in range(len(cols["nll_iw"])):
            row = {"index": len(self._rows)}
            if torch.is_tensor(y) and y.dim() == 1:
                row["label"] = int(y[i])
            elif torch.is_tensor(y) and y.dim() == 2:
                keys = (
                    factor_names
                    if factor_names and len(factor_names) == y.shape[1]
                    else [f"y{j}" for j in range(y.shape[1])]
                )
                row.update({key: int(v) for key, v in zip(keys, y[i].tolist())})
            row.update({name: f"{cols[name][i]:.6g}" for name in columns})
            if flags is not None:
                row["flag"] = int(flags[i])
            self._rows.append(row)

    def _decision(self, trainer: Trainer) -> dict | None:
        """The JSON record (``decisions.report``); checks the labels before anything is written."""
        if not self.deciding:
            return None
        positive = None
        if self.anomalous_labels is not None:
            labels = torch.tensor([row["label"] for row in self._rows]) if "label" in self._rows[0] else None
            positive = decisions.check_labels(labels, self.anomalous_labels, type(trainer.datamodule).__name__)
        scores = decisions.orient(self.score, torch.cat(self._decided))  # back to the score's own sign
        return decisions.report(self.score, scores, self._threshold, positive, self.fpr, self._val_count)

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._rows:
            return
        record = self._decision(trainer)
        rows, self._rows = self._rows, []
        path = self._target(trainer)
        if record is not None:
            with atomic_open(path.with_suffix(".json"), "w") as f:
                f.write(json.dumps(record, indent=2) + "\n")

        def write(target: Path) -> None:
            with atomic_open(target, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)

        # the scores cost the whole run: a failed write keeps them in the run folder
        path = write_or_keep(write, path, "scores.path", trainer.default_root_dir)
        print(f"vae: wrote {len(rows)} rows of anomaly scores to {path}")
        if record is not None:
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
            print(f"vae: decision ({path.with_suffix('.json')}): {shown}")
