"""``WandbSummaries``: what W&B's runs table and charts show for a VAE run.

- ``trainer/global_step`` is the x axis of every metric (Lightning defines it too; restated so
  that the metrics below keep it);
- the run's summary holds the best ``val/elbo`` (max) and ``val/loss`` (min), not the last, and
  the last value of every ``test/*``;
- the KL per latent dimension of a test is one table ``test/kl_per_dim`` (columns ``dim``,
  ``kl`` in nats) with a bar chart, so that it reads as one plot. The ``test/kl_dim/<u>``
  scalars stay as well: they are D columns of the test only (not one per step), the CSV logger,
  ``vae test``'s printed table and ``vae compare`` read them, and a runs table can sort by one
  dimension.
"""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

STEP = "trainer/global_step"
#: (metric glob, summary) pairs
SUMMARIES = (("val/elbo", "max"), ("val/loss", "min"), ("test/*", "last"))


def _runs(trainer: Trainer):
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, WandbLogger)]


class WandbSummaries(Callback):
    """Sets W&B's step metric and summaries and logs the KL per dimension as one table.

    Defines the W&B step metric and summaries at setup and logs the per-dimension KL table
    after a test (see the module docstring). Does nothing without a ``WandbLogger``."""

    @override
    @rank_zero_only
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for run in _runs(trainer):
            run.define_metric(STEP)
            for name, summary in SUMMARIES:
                run.define_metric(name, step_metric=STEP, summary=summary)

    @override
    @rank_zero_only
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        stats = getattr(pl_module, "latent_stats", {}).get("test")
        runs = _runs(trainer)
        if stats is None or not runs:
            return
        import wandb

        rows = [[u, float(kl)] for u, kl in enumerate(stats["kl_per_dim"])]
        table = wandb.Table(columns=["dim", "kl"], data=rows)
        for run in runs:
            run.log(
                {
                    "test/kl_per_dim": table,
                    "test/kl_per_dim_bar": wandb.plot.bar(table, "dim", "kl", title="KL per latent dimension (nats)"),
                    STEP: trainer.global_step,
                }
            )
