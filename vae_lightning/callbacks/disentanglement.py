"""``Disentanglement``: logs disentanglement_lib's metric set (MIG, FactorVAE, DCI, SAP,
modularity, explicitness, BetaVAE) at the end of ``vae test`` (the metric functions are in
``evaluation.disentanglement`` and ``evaluation.disentanglement_classifiers``)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from typing_extensions import override

from vae_lightning.errors import Interrupted, UserError
from vae_lightning.evaluation import disentanglement_classifiers as more
from vae_lightning.evaluation.disentanglement import factor_vae_score, mig, model_representation, sample_factors

# The draws. One shared draw of random factor tuples (seed + 0: a training part, then a test
# part) serves every metric whose protocol asks only for independent uniform tuples: MIG, the
# FactorVAE score's normalizing variances, DCI, SAP, modularity and explicitness; each of those
# metrics still trains on the training part and is scored on the test part. The FactorVAE votes
# (seed + 1) and the BetaVAE points (seed + 5) need tuples that share a factor's value, so they
# keep their own draws. Randomized classifiers get seed + the metric's offset, so a metric's
# number does not move when another is switched on or off.
SEED_OFFSETS = {"mig": 0, "factor_vae": 1, "dci": 2, "sap": 3, "modularity": 4, "explicitness": 4, "beta_vae": 5}
METRICS = tuple(SEED_OFFSETS)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class _Reporter:
    """The lines of ``vae test`` while the metrics run: one before and after each metric (some
    take minutes at the defaults), and points or fits done / total at most every ``every_s``."""

    def __init__(self, every_s: float) -> None:
        self.every_s, self.metric, self._next = every_s, "", 0.0

    @contextmanager
    def metric_step(self, name: str, what: str) -> Iterator[None]:
        start, self.metric, self._next = time.monotonic(), name, time.monotonic() + self.every_s
        rank_zero_info(f"vae test: {what} ...")
        yield
        rank_zero_info(f"vae test: {what}: {time.monotonic() - start:.0f} s")

    def progress(self, done: int, total: int, unit: str) -> None:
        if time.monotonic() >= self._next and done < total:
            self._next = time.monotonic() + self.every_s
            rank_zero_info(f"vae test: {self.metric}: {done:,} / {total:,} {unit}")


@contextmanager
def _stoppable(reporter: _Reporter) -> Iterator[None]:
    """SIGTERM or USR1 while the metrics run stops them at once: whatever handled the signal
    before runs first (Lightning's SLURM handler saves and requeues the job, as during the test
    batches), then ``Interrupted`` names the metric, and nothing is logged."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def stop(signum, frame) -> None:
        before = previous[signum]
        if callable(before):
            before(signum, frame)
        name = signal.Signals(signum).name
        raise Interrupted(f"vae test: {name} during {reporter.metric or 'the metrics'}; no metric was logged.", signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
        dci_model: DCI's classifier: gbt (scikit-learn's GradientBoostingClassifier, as
            disentanglement_lib) or hist (HistGradientBoostingClassifier, much faster; its
            numbers differ from gbt's by more than gbt's seed-to-seed spread, docs/benchmarks.md).
        beta_vae_train: BetaVAE points that train its logistic regression.
        beta_vae_eval: BetaVAE points that the score is measured on.
        beta_vae_batch: pairs per BetaVAE point, sharing the value of one factor.
        seed: seed of the factor draws (the shared draw uses it, the FactorVAE votes and the
            BetaVAE points add their own offsets; README, "Disentanglement protocol").
        progress_s: least seconds between two progress lines of a long metric.
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
        dci_model: str = "gbt",
        beta_vae_train: int = 1000,
        beta_vae_eval: int = 500,
        beta_vae_batch: int = 64,
        seed: int = 0,
        progress_s: float = 5.0,
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
        if dci_model not in more.DCI_MODELS:
            raise UserError(
                f"--disentanglement.dci_model must be one of {', '.join(more.DCI_MODELS)}, got {dci_model!r}."
            )
        self.dci_model, self.progress_s = dci_model, progress_s
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
        reporter = _Reporter(self.progress_s)
        represent = model_representation(pl_module, dm.render, progress=lambda d, t: reporter.progress(d, t, "images"))
        with _stoppable(reporter):
            scores = self.scores(represent, dm.factor_sizes, reporter)
        for name, value in scores.items():  # logged only once all of them are known
            pl_module.log(f"test/{name}", value, rank_zero_only=True)

    def scores(
        self, represent: Callable[[Tensor], Tensor], factor_sizes, reporter: _Reporter | None = None
    ) -> dict[str, float]:
        """The chosen metrics of ``represent`` (factor indices (N, K) -> codes (N, D)), by log name."""
        reporter = reporter or _Reporter(self.progress_s)
        step = reporter.metric_step
        g = torch.Generator().manual_seed(self.seed)
        train = sample_factors(max(self.num_points, self.num_train), factor_sizes, g)
        test = sample_factors(self.num_test, factor_sizes, g)
        codes: dict[str, Tensor] = {}

        def shared(part: str, n: int | None = None) -> Tensor:
            """The codes of the first n tuples of the shared draw's train or test part, each encoded once."""
            if part not in codes:
                with step("encoding", f"encoding the shared draw's {part} part"):
                    codes[part] = represent(train if part == "train" else test)
            return codes[part][:n]

        def split() -> tuple[Tensor, Tensor, Tensor, Tensor]:
            n = self.num_train
            return shared("train", n), train[:n], shared("test"), test

        out: dict[str, float] = {}
        if "mig" in self.metrics or "factor_vae" in self.metrics:
            mig_codes, mig_factors = shared("train", self.num_points), train[: self.num_points]
            if "mig" in self.metrics:
                with step("MIG", "MIG"):
                    out["mig"] = mig(mig_codes, mig_factors, self.num_bins)
            if "factor_vae" in self.metrics:
                seed = self.seed + SEED_OFFSETS["factor_vae"]
                with step("the FactorVAE score", "the FactorVAE score"):
                    out["factor_vae"] = factor_vae_score(
                        represent, factor_sizes, self.train, self.eval, self.batch, seed=seed, codes=mig_codes
                    )
        if "dci" in self.metrics:
            data = split()
            with step("DCI", f"DCI ({self.dci_trees} boosting rounds per factor, the slowest metric)"):
                dci = more.dci(
                    *data,
                    seed=self.seed + SEED_OFFSETS["dci"],
                    trees=self.dci_trees,
                    model=self.dci_model,
                    progress=lambda d, t: reporter.progress(d, t, "factors fitted"),
                )
            out |= {f"dci_{k}": v for k, v in dci.items()}
        if "sap" in self.metrics:
            data = split()
            with step("SAP", "SAP"):
                out["sap"] = more.sap(*data, seed=self.seed + SEED_OFFSETS["sap"])
        if "modularity" in self.metrics or "explicitness" in self.metrics:
            data = split()
            with step("modularity and explicitness", "modularity and explicitness"):
                if "modularity" in self.metrics:
                    out["modularity"] = more.modularity(*data[:2], self.num_bins)
                if "explicitness" in self.metrics:
                    out["explicitness"] = more.explicitness(*data)
        if "beta_vae" in self.metrics:
            seed = self.seed + SEED_OFFSETS["beta_vae"]
            args = (self.beta_vae_train, self.beta_vae_eval, self.beta_vae_batch, seed)
            with step("the BetaVAE score", "the BetaVAE score"):
                out["beta_vae"] = more.beta_vae_score(represent, factor_sizes, *args)
        return out
