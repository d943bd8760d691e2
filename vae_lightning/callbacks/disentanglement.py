"""``Disentanglement``: logs MIG and the FactorVAE score at the end of ``vae test`` (the metric
functions are in ``evaluation.disentanglement``)."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from vae_lightning.errors import UserError
from vae_lightning.evaluation.disentanglement import factor_vae_score, mig, model_representation, sample_factors


class Disentanglement(Callback):
    """Logs disentanglement metrics at the end of vae test on data with factors.

    Logs ``test/mig`` and ``test/factor_vae`` at the end of ``vae test`` for data modules with
    ground-truth factors (``factor_sizes`` and ``render(factors)``, e.g. sprites). Rank zero only.
    Sizes follow disentanglement_lib except the FactorVAE vote counts (10,000 / 5,000 there),
    which are lower by default to keep CPU runs short.

    Args:
        enabled: None: when the data has factors; True: required (an error on data without
            factors); False: never.
        num_points: random factor tuples for MIG and for the FactorVAE variances.
        num_bins: histogram bins per latent dimension for MIG.
        factor_vae_train: votes that train the majority-vote classifier.
        factor_vae_eval: votes that the score is measured on.
        factor_vae_batch: inputs per vote, sharing one factor value.
        seed: seed of the factor draws.
    """

    def __init__(
        self,
        enabled: bool | None = None,
        num_points: int = 10_000,
        num_bins: int = 20,
        factor_vae_train: int = 1000,
        factor_vae_eval: int = 500,
        factor_vae_batch: int = 64,
        seed: int = 0,
    ) -> None:
        if min(num_points, factor_vae_batch) < 2 or min(num_bins, factor_vae_train, factor_vae_eval) < 1:
            raise ValueError(
                "Disentanglement needs num_points, factor_vae_batch >= 2 and num_bins, factor_vae_train, "
                f"factor_vae_eval >= 1; got {num_points}, {factor_vae_batch}, {num_bins}, "
                f"{factor_vae_train}, {factor_vae_eval}."
            )
        self.enabled, self.num_points, self.num_bins, self.seed = enabled, num_points, num_bins, seed
        self.train, self.eval, self.batch = factor_vae_train, factor_vae_eval, factor_vae_batch

    @staticmethod
    def _has_factors(dm) -> bool:
        return getattr(dm, "factor_sizes", None) is not None and callable(getattr(dm, "render", None))

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "test" and self.enabled and not self._has_factors(trainer.datamodule):
            name = type(trainer.datamodule).__name__
            raise UserError(
                f"disentanglement metrics need ground-truth factors, which {name} does not have; "
                "use sprites (vae_lightning.data.SpritesDataModule) or set --disentanglement.enabled false."
            )

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        dm = trainer.datamodule
        if self.enabled is False or not self._has_factors(dm) or not trainer.is_global_zero:
            return
        represent = model_representation(pl_module, dm.render)
        factors = sample_factors(self.num_points, dm.factor_sizes, torch.Generator().manual_seed(self.seed))
        codes = represent(factors)
        scores = {
            "mig": mig(codes, factors, self.num_bins),
            "factor_vae": factor_vae_score(
                represent, dm.factor_sizes, self.train, self.eval, self.batch, seed=self.seed + 1, codes=codes
            ),
        }
        for name, value in scores.items():
            pl_module.log(f"test/{name}", value, rank_zero_only=True)
