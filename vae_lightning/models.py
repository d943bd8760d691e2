"""The ``VAE`` LightningModule, the forward record it passes to objectives, and the variant hook.

One forward pass per batch yields a ``ForwardRecord``; the training loss, the validation and
test metrics, the importance-weighted bound and the anomaly scores all read that one record, so
the encoder runs once per batch. A variant (``vae_lightning.variants``) is a small subclass that
overrides ``objective(record, step, dataset_size)``; it never copies a step.

Names used in code, logs and W&B keys (``train/…``, ``val/…``, ``test/…``), per example and
averaged over the batch:

- ``recon``: −log p(x|z), z ~ q(z|x), summed over pixels, in nats;
- ``kl``: KL(q(z|x) || p(z)) summed over latent dimensions, in nats: in closed form for the
  standard-normal prior, a one-sample Monte Carlo estimate for learned priors
  (``vae_lightning.priors``);
- ``elbo``: −(recon + kl), the evidence lower bound on log p(x), in nats;
- ``loss``: the training objective the variant returns (the VAE's: recon + w(step) · kl);
- ``kl_weight``: the effective weight on the KL term at this step (schedule × β or γ);
- the variant's own terms (``capacity``, ``index_mi``, ``tc``, ``dim_kl``, ``disc_loss``, ``dip_od``, …),
  named in its ``terms``.

Validation and test also log ``active_units`` and ``mi``; test adds ``nll_iw``, ``bpd`` and
``kl_dim/<u>`` (see ``vae_lightning.evaluation.metrics`` for definitions and units).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from typing_extensions import override

from vae_lightning.data.base import images
from vae_lightning.errors import UserError
from vae_lightning.evaluation.metrics import IWBound, LatentMetrics, iw_log_likelihood
from vae_lightning.likelihoods import Bernoulli, Likelihood
from vae_lightning.nets import ConvDecoder, ConvEncoder, Decoder, Encoder, Shape, decoder_output
from vae_lightning.objectives import Constant, KLSchedule, Objective, posterior
from vae_lightning.priors import Prior, StandardNormal
from vae_lightning.runtime import compat
from vae_lightning.runtime.memory import TooLarge, WeightBudget, available_memory, gigabytes

# typed by role, so that help and errors list the encoders (decoders) that fit, not every nn.Module
EncoderFactory = Callable[[Shape, int], Encoder]
DecoderFactory = Callable[[Shape, int], Decoder]


_COMPILED: dict[tuple[Callable, str], Callable] = {}
#: seed of the noise image behind an autoregressive decoder's mean pictures (``VAE.decode``)
AR_MEAN_SEED = 0
#: torch.compile's modes (``model.init_args.compile``); true means "default"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compiled(fn: Callable, mode: str = "default") -> Callable:
    """``torch.compile(fn, mode=mode)``, made once per function and mode (compiled code is cached
    per model by guards)."""
    if (fn, mode) not in _COMPILED:
        _COMPILED[fn, mode] = torch.compile(fn, mode=mode)
    return _COMPILED[fn, mode]


class ForwardRecord(NamedTuple):
    """Everything one ELBO sample computes for a batch; B examples, D latent dimensions.

    x: the inputs (B, C, H, W); mu, logvar: q(z|x)'s parameters (B, D), in the nets' dtype;
    z: one draw z ~ q(z|x) (B, D), float32; out: the decoder's output at z (B, C, H, W) (of an
    autoregressive decoder: each pixel's parameter given z and x's pixels before it);
    recon: −log p(x|z) (B,) in nats; kl_dims: the KL in nats, per dimension (B, D) when the prior
    has a closed-form KL per dimension (``StandardNormal``), else one Monte Carlo column (B, 1),
    log q(z|x) − log p(z) at z. Either way ``kl = kl_dims.sum(1)`` is the per-example KL (B,).
    """

    x: Tensor
    mu: Tensor
    logvar: Tensor
    z: Tensor
    out: Tensor
    recon: Tensor
    kl_dims: Tensor

    @property
    def kl(self) -> Tensor:
        """KL(q(z|x) || p(z)) per example (B,), in nats."""
        return self.kl_dims.sum(1)


class VAE(L.LightningModule):
    """Variational autoencoder: loss = −ELBO = recon + kl.

    Variational autoencoder (Kingma & Welling 2014) with a diagonal-Gaussian posterior,
    a configurable prior (standard normal by default) and a configurable likelihood.
    Loss = −ELBO = recon + kl.

    Args:
        encoder: net class called as ``encoder(image_shape, latent_dim)``; returns (mu, logvar).
        decoder: net class called as ``decoder(image_shape, latent_dim)``; returns the likelihood's
            parameter of shape (B, C, H, W).
        likelihood: observation model p(x|z); None: ``Bernoulli``.
        prior: p(z) (``vae_lightning.priors``); None: ``StandardNormal``. ``MixtureOfGaussians``
            and ``VampPrior`` are learned with the model and use a Monte Carlo KL.
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
            ``true`` uses torch's default mode; a mode name (``reduce-overhead``: CUDA graphs,
            ``max-autotune``, ``max-autotune-no-cudagraphs``) selects that mode.
        channels_last: keep conv weights and images in channels-last memory layout (faster
            convolutions on GPUs with tensor cores; usually no gain on CPUs).
    """

    #: names of the extra terms ``objective`` returns, logged as ``<stage>/<name>``
    terms: tuple[str, ...] = ("kl_weight",)
    #: the objective needs the training-set size (``dataset_size``); checked when fitting starts
    needs_dataset_size: bool = False
    #: the objective reads the KL per latent dimension, so the prior must have it in closed form
    needs_kl_per_dim: bool = False

    @classmethod
    def settings_of_weights(cls, state_dict: dict[str, Tensor]) -> dict[str, Any]:
        """Constructor arguments that a checkpoint's weights (its ``state_dict``) fix where the
        saved settings may not (a format that changed meaning): ``load_model`` loads with them and
        ``check_fits_model`` names them when the configured model differs. None here."""
        return {}

    def __init__(
        self,
        encoder: EncoderFactory = ConvEncoder,
        decoder: DecoderFactory = ConvDecoder,
        likelihood: Likelihood | None = None,
        prior: Prior | None = None,
        latent_dim: int = 10,
        kl_schedule: KLSchedule | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_interval: str = "step",
        image_shape: tuple[int, int, int] | None = None,
        iw_samples: int = 100,
        compile: bool | str = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if image_shape is None:
            raise UserError("image_shape (C, H, W) is required; `vae` sets it from the data module.")
        if latent_dim < 1:
            raise UserError(f"latent_dim must be >= 1, got {latent_dim}.")
        if lr_interval not in ("step", "epoch"):
            raise UserError(f"lr_interval must be 'step' or 'epoch', got {lr_interval!r}.")
        if iw_samples < 1:
            raise UserError(
                f"model.init_args.iw_samples must be >= 1 (the number of importance samples k), got {iw_samples}."
            )
        if isinstance(compile, str) and compile not in COMPILE_MODES:
            raise UserError(
                f"model.init_args.compile must be true, false or one of {', '.join(COMPILE_MODES)}; got {compile!r}."
            )
        self.save_hyperparameters(logger=False)  # the CLI sends the whole config to the logger
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        budget = WeightBudget(available_memory())
        try:
            with budget:  # a weight too large for this machine is refused before it is allocated
                self.encoder = encoder(self.image_shape, latent_dim)
                self.decoder = decoder(self.image_shape, latent_dim)
        except TooLarge as err:
            raise UserError(
                f"the encoder and decoder need more than {err.needed // 4:,} weights ({gigabytes(err.needed)}) but "
                f"this machine has {gigabytes(budget.budget)} available; lower model.init_args.latent_dim "
                f"({latent_dim}) or the nets' widths (encoder/decoder init_args hidden, channels)."
            ) from None
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.likelihood.build(self.image_shape)
        # built after the nets, so the default prior (no parameters, no random draws) leaves
        # the weights, their state_dict keys and the random stream as they were before priors
        self.prior = prior if prior is not None else StandardNormal()
        self.prior.build(latent_dim, self.image_shape, self.encoder)
        if self.needs_kl_per_dim and not self.prior.closed_form:
            raise UserError(
                f"{type(self).__name__} needs the KL per latent dimension, which {type(self.prior).__name__} does not "
                "have in closed form; use model.init_args.prior: vae_lightning.StandardNormal or another variant."
            )
        self.kl_schedule = kl_schedule if kl_schedule is not None else Constant()
        self.optimizer, self.lr_scheduler, self.lr_interval = optimizer, lr_scheduler, lr_interval
        self.iw_samples = iw_samples
        self.dataset_size: int | None = None  # training examples, from the data module (saved in checkpoints)
        self._checkpoint_step = 0  # the optimizer step of the checkpoint loaded, see schedule_step
        # torchmetrics states are not saved in checkpoints, so older checkpoints still load
        self.latent_metrics = nn.ModuleDict({"val": LatentMetrics(latent_dim), "test": LatentMetrics(latent_dim)})
        self.iw_bound = IWBound(math.prod(self.image_shape))
        # val/test means over the whole split, exact under DDP: torchmetrics sums values and weights
        # across ranks (Lightning's sync_dist mean divides by a rounded per-rank count)
        names = ("loss", "recon", "kl", "elbo", *self.terms)
        self.eval_metrics = nn.ModuleDict(
            {
                s: MetricCollection({n: MeanMetric() for n in names}, prefix=f"{s}/", compute_groups=False)
                for s in ("val", "test")
            }
        )
        self.latent_stats: dict[str, dict[str, Tensor]] = {}  # last computed, for callbacks
        self.compile_step, self.channels_last = compile, channels_last  # (nn.Module.compile is a method)
        if channels_last:
            self.encoder.to(memory_format=torch.channels_last)
            self.decoder.to(memory_format=torch.channels_last)

    # ---- the objective: what a variant overrides ------------------------------------------
    def objective(self, f: ForwardRecord, step: int, dataset_size: int | None) -> Objective:
        """The loss of one batch from its forward record, at optimizer step ``step``, for a
        training set of ``dataset_size`` examples (None when unknown). VAE: recon + w(step)·kl."""
        weight = self.kl_schedule(step)
        return Objective(f.recon.mean() + weight * f.kl.mean(), {"kl_weight": weight})

    @override
    def forward(self, x: Tensor) -> ForwardRecord:
        """One ELBO sample of a batch x (B, C, H, W): the ``ForwardRecord``."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.compile_step and not torch.compiler.is_compiling():
            mode = self.compile_step if isinstance(self.compile_step, str) else "default"
            return compiled(type(self).forward, mode)(self, x)
        return self.elbo_sample(x)

    def elbo_sample(self, x: Tensor) -> ForwardRecord:
        """The ``ForwardRecord`` of x (B, C, H, W), what ``forward`` computes (compiled or not): one
        encoder pass, one draw z ~ q(z|x), one decoder pass. A model of another structure
        (``HierarchicalVAE``) overrides this, not ``forward``."""
        mu, logvar = self.encoder(x)
        z = posterior(mu, logvar).rsample()  # (B, D), float32
        out = decoder_output(self.decoder, z.to(mu.dtype), x)  # an autoregressive decoder reads x too
        recon = -self.likelihood.log_prob(out, x)  # (B,)
        return ForwardRecord(x, mu, logvar, z, out, recon, self.prior.kl(mu, logvar, z))

    def _step(self, batch, stage: str) -> tuple[Objective, ForwardRecord]:
        f = self(images(batch))
        objective = self.objective(f, self.schedule_step, self.dataset_size)
        loss, terms = objective
        if stage == "train" and not self.log_now():
            return objective, f  # self.log costs real time per call: train metrics only on the steps that are written
        values = {"loss": loss, "recon": f.recon.mean(), "kl": f.kl.mean(), "elbo": -(f.recon + f.kl).mean(), **terms}
        batch_size = f.x.shape[0]
        if stage == "train":  # on the steps Lightning writes (every log_every_n_steps)
            for name, value in values.items():
                self.log(
                    f"train/{name}", value, prog_bar=name == "loss", on_step=True, on_epoch=False, batch_size=batch_size
                )
            return objective, f
        # val/test: averaged over the epoch and reduced across DDP ranks by the metric objects
        metrics = self.eval_metrics[stage]
        for name, value in values.items():
            metrics[name].update(
                torch.as_tensor(value, dtype=torch.float32, device=self.device).detach(), weight=batch_size
            )
        self.log_dict({f"{stage}/{name}": metrics[name] for name in values}, on_step=False, on_epoch=True)
        return objective, f

    @property
    def schedule_step(self) -> int:
        """The optimizer step that schedules (KL weight, capacity) are evaluated at: the trainer's
        global step, or the loaded checkpoint's step where that is larger. Lightning restores the
        global step only for ``fit``; without this, ``vae test --ckpt_path X`` would compute
        ``test/loss`` and ``test/kl_weight`` at step 0 of the schedule."""
        return max(self.global_step, self._checkpoint_step)

    def log_now(self) -> bool:
        """True on the training steps whose metrics Lightning writes (every ``log_every_n_steps``);
        also True outside a Trainer."""
        trainer = compat.attached_trainer(self)
        return trainer is None or compat.should_update_logs(trainer)

    @override
    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")[0].loss

    def _update_latent_metrics(self, stage: str, f: ForwardRecord) -> None:
        # a closed-form KL per dimension is the record's own (for N(0, I) the same numbers
        # LatentMetrics would compute; for a hierarchical prior the only right ones)
        self.latent_metrics[stage].update(f.mu, f.logvar, f.kl, f.kl_dims if self.prior.closed_form else None)

    @override
    def validation_step(self, batch, batch_idx: int) -> Tensor:
        objective, f = self._step(batch, "val")
        self._update_latent_metrics("val", f)
        return objective.loss

    @override
    def test_step(self, batch, batch_idx: int) -> Tensor:
        objective, f = self._step(batch, "test")
        self._update_latent_metrics("test", f)
        self.iw_bound.update(-iw_log_likelihood(self, f.x, self.iw_samples, first=f))  # k decoder passes: test only
        return objective.loss

    @override
    def predict_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        from vae_lightning.evaluation.scoring import anomaly_scores

        return anomaly_scores(self, images(batch), self.iw_samples)

    # ---- evaluation metrics (vae_lightning.evaluation.metrics) -------------------------------------
    def _log_latent_metrics(self, stage: str) -> None:
        metrics = self.latent_metrics[stage]
        if not metrics.kl.update_called:
            return
        stats = metrics.compute()  # reduced over DDP ranks: the same values everywhere
        self.latent_stats[stage] = {k: v.detach().cpu() for k, v in stats.items()}
        values = self.latent_values(stage, stats)
        if stage == "test":
            self.iw_bound.reset()
        self.log_dict({f"{stage}/{name}": value for name, value in values.items()}, sync_dist=True)
        metrics.reset()

    def latent_values(self, stage: str, stats: dict[str, Tensor]) -> dict[str, Tensor]:
        """The scalars logged as ``<stage>/<name>`` at the end of a validation or test, from the
        split's ``LatentMetrics`` (``stats``) and, at test, the IW bound."""
        values = {"active_units": stats["active_units"].float(), "mi": stats["mi"]}
        if stage == "test":
            values.update(self.iw_bound.compute())
            values.update({f"kl_dim/{u}": kl for u, kl in enumerate(stats["kl_per_dim"])})
        return values

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_latent_metrics("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._log_latent_metrics("test")

    # ---- using a trained model: the Python API (``vae_lightning.load_model`` returns one) ----
    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x) of images x (B, C, H, W) with pixels in [0, 1] (binary for a Bernoulli model):
        (mu, logvar), each (B, D) float32; logvar is log σ², σ in prior standard deviations."""
        mu, logvar = self.encoder(x.to(self.device).float())
        return mu.float(), logvar.float()

    @property
    def group_slices(self) -> list[slice]:
        """The columns of z (and of mu, logvar) that hold each group of latents: here one group of
        all D (``HierarchicalVAE`` has L)."""
        return [slice(0, self.latent_dim)]

    @torch.no_grad()
    def draw_posterior(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One draw z ~ q(z|x) (B, D) float32 on the CPU for images x, from ``generator``."""
        mu, logvar = (t.cpu() for t in self.encode(x))
        return mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=generator)

    @torch.no_grad()
    def decode(
        self,
        z: Tensor,
        draw: bool = False,
        generator: torch.Generator | None = None,
        on_row: Callable[[int], None] | None = None,
    ) -> Tensor:
        """Images (N, C, H, W) in [0, 1] for latents z (N, D): E[x|z], or with ``draw`` one draw
        x ~ p(x|z) (binary for a Bernoulli model; Gaussian draws clipped to [0, 1]). ``generator``
        (a CPU one) seeds the draw.

        An autoregressive decoder has no closed-form E[x|z]: its images are drawn pixel by pixel
        (one decoder pass per pixel; ``on_row(r)`` is called after each row). Without ``draw`` the
        picture is each pixel's mean given z and the pixels drawn before it (for Bernoulli pixels
        p(x_i = 1 | x_<i, z)) along one draw made with a fixed noise image shared by every z
        (``AR_MEAN_SEED``): like E[x|z] it is a function of z alone, and the same for every z when
        the decoder ignores z. With ``draw`` it is the drawn image, with noise from ``generator``."""
        z = z.to(self.device).float()
        if getattr(self.decoder, "autoregressive", False):
            return self._generate(z, draw, generator, on_row)
        out = self.decoder(z)
        if not draw:
            return self.likelihood.mean(out).float().clamp(0, 1)
        u = torch.rand(out.shape, generator=generator).to(out.device)  # inverse-CDF: one seeded uniform per pixel
        return self._inverse_cdf(out, u).clamp(0, 1)

    def _inverse_cdf(self, out: Tensor, u: Tensor) -> Tensor:
        """Pixels x with CDF(x) = u under p(x|z) of the decoder output ``out`` (for Bernoulli pixels x = [u < p])."""
        pixels = self.likelihood.dist(out).base_dist
        return (u < pixels.probs).float() if self.likelihood.discrete else pixels.icdf(u.clamp(1e-6, 1 - 1e-6))

    def _generate(
        self, z: Tensor, draw: bool, generator: torch.Generator | None, on_row: Callable[[int], None] | None
    ) -> Tensor:
        shape = (z.shape[0], *self.image_shape)
        if draw:
            u = torch.rand(shape, generator=generator)
        else:  # one noise image for every z: the picture changes with z only
            u = torch.rand((1, *self.image_shape), generator=torch.Generator().manual_seed(AR_MEAN_SEED)).expand(shape)
        u = u.to(z.device)
        x, params = self.decoder.generate(
            z, lambda out, r, c: self._inverse_cdf(out, u[:, :, r : r + 1, c : c + 1]), on_row
        )
        return (x if draw else self.likelihood.mean(params)).float().clamp(0, 1)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        draw: bool = False,
        on_row: Callable[[int], None] | None = None,
    ) -> Tensor:
        """n images (n, C, H, W) in [0, 1] decoded from z ~ p(z), the model's prior (with the
        standard-normal prior and ``temperature`` T: z ~ N(0, T²I)): the means E[x|z], or with
        ``draw`` draws from p(x|z) (see ``decode``, also for autoregressive decoders and ``on_row``)."""
        z = self.prior_latents(n, generator, temperature)
        return self.decode(z, draw=draw, generator=generator, on_row=on_row)

    @torch.no_grad()
    def prior_latents(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        """n draws z ~ p(z) (n, D) on the CPU, what ``sample`` decodes; ``temperature`` T scales the
        standard-normal prior to N(0, T²I) (other priors refuse T ≠ 1)."""
        if temperature != 1.0 and not isinstance(self.prior, StandardNormal):
            raise UserError(
                f"--temperature needs the standard-normal prior; this model has {type(self.prior).__name__}."
            )
        return temperature * self.prior.sample(n, generator)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x|z] at z = μ(x) for images x (B, C, H, W): (B, C, H, W) in [0, 1] (for an
        autoregressive decoder the picture of ``decode``: drawn from z alone, not from x's pixels)."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, k: int = 100) -> Tensor:
        """log p̂_k(x), the importance-weighted lower bound on log p(x) with k samples (Burda et
        al. 2015), per input of x (B, C, H, W): (B,) float32, in nats (summed over pixels)."""
        return iw_log_likelihood(self, x.to(self.device).float(), k)

    # ---- set-up --------------------------------------------------------------------------
    @override
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        self.check_data(dm, stage)
        if stage == "fit":
            rank_zero_info(f"vae: prior {type(self.prior).__name__}; KL: {self.prior.kl_method}.")
            self.dataset_size = getattr(dm, "num_train", None)

    def check_data(self, dm, stage: str) -> None:
        """Refuse data module ``dm`` (set up for ``stage``) when this model cannot use it. The CLI's
        pre-flight calls it before any logger or record writes a file; ``setup`` again for library use."""
        if tuple(dm.image_shape) != self.image_shape:
            raise UserError(
                f"The model was built for images of shape {self.image_shape} but the data yields "
                f"{tuple(dm.image_shape)}; train a new model for this data or use matching data."
            )
        if self.likelihood.discrete and not dm.binary:
            can_binarize = "binarize" in inspect.signature(type(dm).__init__).parameters
            fix = (
                "set data.init_args.binarize: dynamic (or use a Gaussian likelihood)"
                if can_binarize
                else "use a Gaussian likelihood, e.g. --model.init_args.likelihood vae_lightning.Gaussian"
            )
            raise UserError(
                f"The Bernoulli likelihood needs binary pixels but {type(dm).__name__} yields gray values; {fix}."
            )
        if stage == "fit" and self.needs_dataset_size and getattr(dm, "num_train", None) is None:
            raise UserError(
                f"{type(self).__name__} needs the training-set size, but {type(dm).__name__} does not know it "
                "(no num_train); use a data module with a finite, known training split."
            )

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["dataset_size"] = self.dataset_size

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.dataset_size = checkpoint.get("dataset_size", self.dataset_size)
        self._checkpoint_step = int(checkpoint.get("global_step", 0))
        if "current_model_state" in checkpoint:
            self._load_averaged(checkpoint)

    def _load_averaged(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint of a fit with weight averaging (Lightning's ``EMAWeightAveraging``,
        ``configs/trainer/ema.yaml``) holds the average as ``state_dict`` and the raw weights as
        ``current_model_state``: evaluations and pictures load the average; a fit resumes both,
        or without the averaging callback continues from the raw weights. Says which, in the log."""
        from lightning.pytorch.callbacks import WeightAveraging

        trainer = compat.attached_trainer(self)
        stage = getattr(getattr(getattr(trainer, "state", None), "fn", None), "value", None)
        if stage != "fit":
            use = f"vae {stage}" if stage else "this model"
            rank_zero_info(
                f"vae: the checkpoint holds weights averaged during training (EMA): {use} uses the averaged "
                "weights (its raw weights are kept for resuming the fit)."
            )
        elif any(isinstance(c, WeightAveraging) for c in trainer.callbacks):
            rank_zero_info(
                "vae: resuming weight averaging: training continues from the raw weights, the average from its "
                "own state in the checkpoint; validation and the saved state_dict use the average."
            )
        else:
            checkpoint["state_dict"] = checkpoint["current_model_state"]  # what the optimizer state belongs to
            rank_zero_warn(
                "vae: the checkpoint was written with weight averaging (EMA) but this fit has none: training "
                "continues from its raw weights and the average is dropped; stack configs/trainer/ema.yaml to keep it."
            )

    @override
    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = {"scheduler": self.lr_scheduler(optimizer), "interval": self.lr_interval, "monitor": "val/loss"}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
