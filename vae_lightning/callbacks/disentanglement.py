"""``Disentanglement``: logs disentanglement_lib's metric set (MIG, FactorVAE, DCI, SAP,
modularity, explicitness, BetaVAE) at the end of ``vae test`` (the metric functions are in
``evaluation.disentanglement`` and ``evaluation.disentanglement_more``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from typing_extensions import override

from vae_lightning.errors import UserError
from vae_lightning.evaluation import disentanglement_more as more
from vae_lightning.evaluation.disentanglement import factor_vae_score, mig, model_representation, sample_factors


@contextmanager
def _announced(what: str) -> Iterator[None]:
    """A line before and after a metric: at the defaults some take minutes on a CPU (README)."""
    start = time.monotonic()
    rank_zero_info(f"vae test: {what} ...")
    yield
    rank_zero_info(f"vae test: {what}: {time.monotonic() - start:.0f} s")


# each metric draws its points from seed + its offset, so switching one metric on or off does not
# move another's numbers; modularity and explicitness share their draw, as in disentanglement_lib
SEED_OFFSETS = {"mig": 0, "factor_vae": 1, "dci": 2, "sap": 3, "modularity": 4, "explicitness": 4, "beta_vae": 5}
METRICS = tuple(SEED_OFFSETS)


class Disentanglement(Callback):
    """Logs disentanglement metrics at the end of vae test on data with factors.

    Logs ``test/mig``, ``test/factor_vae``, ``test/dci_disentanglement``,
    ``test/dci_completeness``, ``test/dci_informativeness``, ``test/sap``, ``test/modularity``,
    ``test/explicitness`` and ``test/beta_vae`` (each in [0, 1]) at the end of ``vae test`` for
    data modules with ground-truth factors (``factor_sizes`` and ``render(factors)``, e.g.
    sprites), from the posterior means of rendered random factor tuples. Rank zero only. Sizes
    follow disentanglement_lib except the FactorVAE and BetaVAE point counts (10,000 / 5,000
    there), which are lower by default to keep CPU runs short. The protocols and what each metric
    costs are in the README ("Evaluating a model").

    Args:
        enabled: None: when the data has factors; True: required (an error on data without
            factors); False: never.
        metrics: which metrics run, from mig, factor_vae, dci, sap, modularity, explicitness,
            beta_vae; None: all of them.
        num_points: random factor tuples for MIG and for the FactorVAE variances.
        num_bins: histogram bins per latent dimension for MIG and modularity.
        factor_vae_train: votes that train the majority-vote classifier.
        factor_vae_eval: votes that the score is measured on.
        factor_vae_batch: inputs per vote, sharing one factor value.
        num_train: random factor tuples that train the DCI, SAP and explicitness classifiers
            (and give modularity's mutual information).
        num_test: random factor tuples that DCI, SAP and explicitness are scored on.
        dci_trees: boosting rounds of each DCI classifier (scikit-learn's n_estimators; 100,
            its default, in disentanglement_lib); its cost grows with them.
        beta_vae_train: BetaVAE points that train its logistic regression.
        beta_vae_eval: BetaVAE points that the score is measured on.
        beta_vae_batch: pairs per BetaVAE point, sharing the value of one factor.
        seed: seed of the factor draws (each metric adds its own offset).
    """

    def __init__(
        self,
        enabled: bool | None = None,
        metrics: list[str] | None = None,
        num_points: int = 10_000,
        num_bins: int = 20,
        factor_vae_train: int = 1000,
        factor_vae_eval: int = 500,
        factor_vae_batch: int = 64,
        num_train: int = 10_000,
        num_test: int = 5_000,
        dci_trees: int = 100,
        beta_vae_train: int = 1000,
        beta_vae_eval: int = 500,
        beta_vae_batch: int = 64,
        seed: int = 0,
    ) -> None:
        unknown = [name for name in metrics or [] if name not in SEED_OFFSETS]
        if unknown:
            raise UserError(
                f"--disentanglement.metrics has the unknown name {unknown[0]!r}; choose from {', '.join(METRICS)}."
            )
        counts = {"num_points": num_points, "factor_vae_batch": factor_vae_batch, "num_train": num_train}
        counts |= {"num_test": num_test, "beta_vae_train": beta_vae_train, "beta_vae_batch": beta_vae_batch}
        small = {"num_bins": num_bins, "factor_vae_train": factor_vae_train, "factor_vae_eval": factor_vae_eval}
        small |= {"beta_vae_eval": beta_vae_eval, "dci_trees": dci_trees}
        bad = [f"{k} {v}" for k, v in counts.items() if v < 2] + [f"{k} {v}" for k, v in small.items() if v < 1]
        if bad:
            raise UserError(
                f"--disentanglement.{bad[0]} is too small; num_bins, dci_trees and the *_eval and factor_vae_train "
                "counts need >= 1, the other counts >= 2."
            )
        self.enabled, self.metrics = enabled, tuple(m for m in METRICS if metrics is None or m in metrics)
        self.num_points, self.num_bins, self.seed = num_points, num_bins, seed
        self.train, self.eval, self.batch = factor_vae_train, factor_vae_eval, factor_vae_batch
        self.num_train, self.num_test, self.dci_trees = num_train, num_test, dci_trees
        self.beta_vae_train, self.beta_vae_eval, self.beta_vae_batch = beta_vae_train, beta_vae_eval, beta_vae_batch

    @staticmethod
    def _has_factors(dm) -> bool:
        return getattr(dm, "factor_sizes", None) is not None and callable(getattr(dm, "render", None))

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "test" and self.enabled and not self._has_factors(trainer.datamodule):
            name = type(trainer.datamodule).__name__
            raise UserError(
                f"disentanglement metrics (MIG, FactorVAE, DCI, SAP, modularity, explicitness, BetaVAE) need "
                f"ground-truth factors, which {name} does not have; use sprites (vae_lightning.data.SpritesDataModule) "
                "or set --disentanglement.enabled false."
            )

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        dm = trainer.datamodule
        if self.enabled is False or not self.metrics or not self._has_factors(dm) or not trainer.is_global_zero:
            return
        for name, value in self.scores(model_representation(pl_module, dm.render), dm.factor_sizes).items():
            pl_module.log(f"test/{name}", value, rank_zero_only=True)

    def scores(self, represent: Callable[[Tensor], Tensor], factor_sizes) -> dict[str, float]:
        """The chosen metrics of ``represent`` (factor indices (N, K) -> codes (N, D)), by log name."""
        splits: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}

        def split(metric: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            """(train codes, train factors, test codes, test factors) drawn from the metric's seed."""
            offset = SEED_OFFSETS[metric]
            if offset not in splits:
                g = torch.Generator().manual_seed(self.seed + offset)
                train, test = (sample_factors(n, factor_sizes, g) for n in (self.num_train, self.num_test))
                splits[offset] = (represent(train), train, represent(test), test)
            return splits[offset]

        out: dict[str, float] = {}
        if "mig" in self.metrics or "factor_vae" in self.metrics:
            with _announced("MIG and the FactorVAE score"):
                out |= self._mig_and_factor_vae(represent, factor_sizes)
        if "dci" in self.metrics:
            with _announced(f"DCI ({self.dci_trees} boosting rounds per factor, the slowest metric)"):
                dci = more.dci(*split("dci"), seed=self.seed + SEED_OFFSETS["dci"], trees=self.dci_trees)
            out |= {f"dci_{k}": v for k, v in dci.items()}
        if "sap" in self.metrics:
            with _announced("SAP"):
                out["sap"] = more.sap(*split("sap"), seed=self.seed + SEED_OFFSETS["sap"])
        if "modularity" in self.metrics or "explicitness" in self.metrics:
            with _announced("modularity and explicitness"):
                if "modularity" in self.metrics:
                    out["modularity"] = more.modularity(*split("modularity")[:2], self.num_bins)
                if "explicitness" in self.metrics:
                    out["explicitness"] = more.explicitness(*split("explicitness"))
        if "beta_vae" in self.metrics:
            seed = self.seed + SEED_OFFSETS["beta_vae"]
            args = (self.beta_vae_train, self.beta_vae_eval, self.beta_vae_batch, seed)
            with _announced("the BetaVAE score"):
                out["beta_vae"] = more.beta_vae_score(represent, factor_sizes, *args)
        return out

    def _mig_and_factor_vae(self, represent: Callable[[Tensor], Tensor], factor_sizes) -> dict[str, float]:
        """MIG on num_points tuples from ``seed``; the FactorVAE score normalizes by their variances."""
        factors = sample_factors(self.num_points, factor_sizes, torch.Generator().manual_seed(self.seed))
        codes = represent(factors)
        out = {"mig": mig(codes, factors, self.num_bins)} if "mig" in self.metrics else {}
        if "factor_vae" in self.metrics:
            seed = self.seed + SEED_OFFSETS["factor_vae"]
            out["factor_vae"] = factor_vae_score(
                represent, factor_sizes, self.train, self.eval, self.batch, seed=seed, codes=codes
            )
        return out
