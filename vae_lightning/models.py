"""LightningModules: ``VAE`` and its variants ``BetaVAE`` and ``FreeBitsVAE``.

All three share one ``_step``; a variant overrides ``kl_term`` only. Names used in code, logs
and W&B keys (``train/…``, ``val/…``, ``test/…``), per example and averaged over the batch:

- ``recon``: −log p(x|z), z ~ q(z|x), summed over pixels, in nats;
- ``kl``: KL(q(z|x) || p(z)) summed over latent dimensions, in nats;
- ``elbo``: −(recon + kl), the evidence lower bound on log p(x), in nats;
- ``loss``: the training objective, recon + kl_weight · (the variant's KL term);
- ``kl_weight``: the effective weight on the KL term at this step (schedule × β or γ).

Validation and test also log ``active_units`` and ``mi``; test adds ``nll_iw``, ``bpd`` and
``kl_dim/<u>`` (see ``vae_lightning.metrics`` for definitions and units).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from vae_lightning.errors import UserError
from vae_lightning.evaluation.metrics import IWBound, LatentMetrics, iw_log_likelihood
from vae_lightning.likelihoods import Bernoulli, Likelihood
from vae_lightning.nets import ConvDecoder, ConvEncoder, Shape
from vae_lightning.objectives import Constant, KLSchedule, gaussian_kl, posterior
from vae_lightning.runtime import compat

EncoderFactory = Callable[[Shape, int], nn.Module]
DecoderFactory = Callable[[Shape, int], nn.Module]


_COMPILED: dict[Callable, Callable] = {}


def compiled(fn: Callable) -> Callable:
    """``torch.compile(fn)``, made once per function (compiled code is cached per model by guards)."""
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn)
    return _COMPILED[fn]


class VAE(L.LightningModule):
    """Variational autoencoder (Kingma & Welling 2014) with a diagonal-Gaussian posterior,
    a standard-normal prior and a configurable likelihood. Loss = −ELBO = recon + kl.

    Args:
        encoder: net class called as ``encoder(image_shape, latent_dim)``; returns (mu, logvar).
        decoder: net class called as ``decoder(image_shape, latent_dim)``; returns the likelihood's
            parameter of shape (B, C, H, W).
        likelihood: observation model p(x|z); None: ``Bernoulli``.
        latent_dim: number of latent dimensions D.
        kl_schedule: weight on the KL term as a function of the optimizer step; None: ``Constant(1)``.
        optimizer: optimizer class and arguments; called with the model's parameters.
        lr_scheduler: optional LR scheduler class and arguments; stepped every ``lr_interval``.
        lr_interval: ``step`` or ``epoch``.
        image_shape: (C, H, W) of the data; ``vae`` sets it from the data module (leave it out of
            configs; a value that disagrees with the data is refused).
        iw_samples: importance samples k per test example for ``nll_iw`` (and ``vae predict``);
            the bound tightens as k grows, at k times the cost of a decoder pass.
        compile: ``torch.compile`` the model step (nets and objective terms in ``forward``); the
            first steps pay for compilation (seconds to a minute). Checkpoint keys do not change.
        channels_last: keep conv weights and images in channels-last memory layout (faster
            convolutions on GPUs with tensor cores; usually no gain on CPUs).
    """

    def __init__(
        self,
        encoder: EncoderFactory = ConvEncoder,
        decoder: DecoderFactory = ConvDecoder,
        likelihood: Likelihood | None = None,
        latent_dim: int = 10,
        kl_schedule: KLSchedule | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_interval: str = "step",
        image_shape: tuple[int, int, int] | None = None,
        iw_samples: int = 100,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if image_shape is None:
            raise ValueError("image_shape (C, H, W) is required; `vae` sets it from the data module.")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}.")
        if lr_interval not in ("step", "epoch"):
            raise ValueError(f"lr_interval must be 'step' or 'epoch', got {lr_interval!r}.")
        self.save_hyperparameters(logger=False)  # the CLI sends the whole config to the logger
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.encoder = encoder(self.image_shape, latent_dim)
        self.decoder = decoder(self.image_shape, latent_dim)
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.likelihood.build(self.image_shape)
        self.kl_schedule = kl_schedule if kl_schedule is not None else Constant()
        self.optimizer, self.lr_scheduler, self.lr_interval = optimizer, lr_scheduler, lr_interval
        self.kl_multiplier = 1.0  # β or γ in the variants; logged as part of kl_weight
        if iw_samples < 1:
            raise UserError(f"model.init_args.iw_samples must be >= 1 (the number of importance samples k), got {iw_samples}.")
        self.iw_samples = iw_samples
        # torchmetrics states are not saved in checkpoints, so older checkpoints still load
        self.latent_metrics = nn.ModuleDict({"val": LatentMetrics(latent_dim), "test": LatentMetrics(latent_dim)})
        self.iw_bound = IWBound(math.prod(self.image_shape))
        self.latent_stats: dict[str, dict[str, Tensor]] = {}  # last computed, for callbacks
        self.eval_means = nn.ModuleDict()  # val/test running means, see _eval_mean; not in checkpoints
        self.compile_step, self.channels_last = compile, channels_last  # (nn.Module.compile is a method)
        if channels_last:
            self.encoder.to(memory_format=torch.channels_last)
            self.decoder.to(memory_format=torch.channels_last)

    # ---- the objective -------------------------------------------------------------------
    def kl_term(self, kl: Tensor) -> Tensor:
        """KL part of the objective from per-dimension KL (B, D); the variants override this."""
        return kl.sum(1).mean()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One ELBO sample: returns recon (B,), kl (B, D) in nats, and the decoder output."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.compile_step and not torch.compiler.is_compiling():
            return compiled(type(self).forward)(self, x)
        mu, logvar = self.encoder(x)
        z = posterior(mu, logvar).rsample()  # (B, D), float32
        out = self.decoder(z.to(mu.dtype))
        recon = -self.likelihood.log_prob(out, x)  # (B,)
        return recon, gaussian_kl(mu, logvar), out

    def _step(self, batch, stage: str) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        recon, kl_dims, _ = self(x)
        kl = kl_dims.sum(1)
        weight = self.kl_schedule(self.global_step)
        loss = recon.mean() + weight * self.kl_term(kl_dims)
        if stage == "train" and not self.log_now():
            return loss  # self.log costs ~0.2 ms a call: train metrics only on the steps that are written
        metrics = {
            "loss": loss,
            "recon": recon.mean(),
            "kl": kl.mean(),
            "elbo": -(recon + kl).mean(),
            "kl_weight": weight * self.kl_multiplier,
        }
        train = stage == "train"
        for name, value in metrics.items():
            # train: on the steps Lightning writes (every log_every_n_steps);
            # val/test: averaged over the epoch and reduced across DDP ranks.
            attribute = None
            if not train:  # log the metric object: Lightning computes and resets it per epoch
                value, attribute = self._eval_mean(f"{stage}/{name}", value, x.shape[0])
            self.log(f"{stage}/{name}", value, prog_bar=name == "loss", on_step=train, on_epoch=not train,
                     batch_size=x.shape[0], metric_attribute=attribute)
        return loss

    def _eval_mean(self, key: str, value: Tensor | float, n: int) -> tuple[MeanMetric, str]:
        """The mean of ``key`` over the whole split, exact under DDP: torchmetrics sums values and
        counts across ranks (Lightning's ``sync_dist`` mean rounds the summed count down to an
        integer mean, which is wrong whenever the ranks hold an odd total)."""
        name = key.replace("/", "_")
        if name not in self.eval_means:
            self.eval_means[name] = MeanMetric().to(self.device)
        self.eval_means[name].update(torch.as_tensor(value, dtype=torch.float32, device=self.device).detach(), weight=n)
        return self.eval_means[name], f"eval_means.{name}"

    def log_now(self) -> bool:
        """True on the training steps whose metrics Lightning writes (every ``log_every_n_steps``);
        also True outside a Trainer."""
        trainer = self._trainer
        return trainer is None or compat.should_update_logs(trainer)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> Tensor:
        loss = self._step(batch, "val")
        self._update_metrics(batch, "val")
        return loss

    def test_step(self, batch, batch_idx: int) -> Tensor:
        loss = self._step(batch, "test")
        self._update_metrics(batch, "test")
        return loss

    def predict_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        from vae_lightning.evaluation.scoring import anomaly_scores

        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return anomaly_scores(self, x, self.iw_samples)

    # ---- evaluation metrics (vae_lightning.metrics) ----------------------------------------
    def _update_metrics(self, batch, stage: str) -> None:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        mu, logvar = self.encoder(x)
        self.latent_metrics[stage].update(mu, logvar)
        if stage == "test":  # k decoder passes per example: test only
            self.iw_bound.update(-iw_log_likelihood(self, x, self.iw_samples))

    def _log_metrics(self, stage: str) -> None:
        metrics = self.latent_metrics[stage]
        if not metrics.kl.update_called:
            return
        stats = metrics.compute()  # reduced over DDP ranks: the same values everywhere
        self.latent_stats[stage] = {k: v.detach().cpu() for k, v in stats.items()}
        values = {"active_units": stats["active_units"].float(), "mi": stats["mi"]}
        if stage == "test":
            values.update(self.iw_bound.compute())
            values.update({f"kl_dim/{u}": kl for u, kl in enumerate(stats["kl_per_dim"])})
            self.iw_bound.reset()
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, sync_dist=True)
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    # ---- generation ----------------------------------------------------------------------
    @torch.no_grad()
    def decode_mean(self, z: Tensor) -> Tensor:
        """E[x|z] for latents z (N, D): images (N, C, H, W) in [0, 1] for pictures."""
        return self.likelihood.mean(self.decoder(z.to(self.device))).clamp(0, 1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Means of p(x|z) for n draws z ~ N(0, I): (n, C, H, W)."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        return self.decode_mean(z)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Means of p(x|z) at z = E[z|x]: (B, C, H, W)."""
        mu, _ = self.encoder(x.to(self.device))
        return self.decode_mean(mu)

    # ---- set-up --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        if tuple(dm.image_shape) != self.image_shape:
            raise UserError(
                f"The model was built for images of shape {self.image_shape} but the data yields "
                f"{tuple(dm.image_shape)}; train a new model for this data or use matching data."
            )
        if self.likelihood.discrete and not dm.binary:
            can_binarize = "binarize" in inspect.signature(type(dm).__init__).parameters
            fix = ("set data.init_args.binarize: dynamic (or use a Gaussian likelihood)" if can_binarize
                   else "use a Gaussian likelihood, e.g. --model.init_args.likelihood vae_lightning.Gaussian")
            raise UserError(f"The Bernoulli likelihood needs binary pixels but {type(dm).__name__} yields gray values; {fix}.")

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = {"scheduler": self.lr_scheduler(optimizer), "interval": self.lr_interval, "monitor": "val/loss"}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


class BetaVAE(VAE):
    """β-VAE (Higgins et al. 2017): loss = recon + β·kl. With ``c_max`` set, the capacity form of
    Burgess et al. 2018: loss = recon + γ·|kl − C|, C rising linearly from 0 to ``c_max`` nats
    over ``c_steps`` optimizer steps. The KL schedule multiplies either term.

    Args:
        beta: weight β ≥ 0 on the KL (plain form).
        c_max: final capacity C in nats; None for the plain form.
        c_steps: optimizer steps over which C rises to ``c_max``.
        gamma: weight γ ≥ 0 on |kl − C| (capacity form).
    """

    def __init__(
        self, *args, beta: float = 4.0, c_max: float | None = None, c_steps: int = 100_000, gamma: float = 1000.0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        for name, value in (("beta", beta), ("gamma", gamma), ("c_max", c_max or 0.0)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        if c_steps < 1:
            raise ValueError(f"c_steps must be >= 1, got {c_steps}.")
        self.beta, self.c_max, self.c_steps, self.gamma = beta, c_max, c_steps, gamma
        self.kl_multiplier = beta if c_max is None else gamma

    def capacity(self, step: int) -> float:
        """C(step) in nats: linear from 0 to c_max over c_steps, then constant."""
        return (self.c_max or 0.0) * min(step / self.c_steps, 1.0)

    def kl_term(self, kl: Tensor) -> Tensor:
        if self.c_max is None:
            return self.beta * kl.sum(1).mean()
        capacity = self.capacity(self.global_step)
        if self.training and self.log_now():
            self.log("train/capacity", capacity, on_step=True, on_epoch=False)
        return self.gamma * (kl.sum(1).mean() - capacity).abs()


class FreeBitsVAE(VAE):
    """Free-bits VAE (Kingma et al. 2016, "Improved variational inference with inverse
    autoregressive flow", eq. 15): the KL term is Σ_g max(λ, E_batch[KL_g]) over groups g of
    latent dimensions, so no group is pushed below λ nats. ``kl`` and ``elbo`` are still logged
    with the true KL.

    Args:
        free_bits: λ ≥ 0, in nats per group.
        group_size: latent dimensions per group (1: one group per dimension); must divide D.
    """

    def __init__(self, *args, free_bits: float = 0.25, group_size: int = 1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if free_bits < 0:
            raise ValueError(f"free_bits must be >= 0 nats, got {free_bits}.")
        if group_size < 1 or self.latent_dim % group_size:
            raise ValueError(f"group_size must be >= 1 and divide latent_dim={self.latent_dim}, got {group_size}.")
        self.free_bits, self.group_size = free_bits, group_size

    def kl_term(self, kl: Tensor) -> Tensor:
        per_group = kl.view(kl.shape[0], -1, self.group_size).sum(2).mean(0)  # (G,)
        return per_group.clamp(min=self.free_bits).sum()
