"""``HierarchicalVAE``: a top-down VAE with L groups of latents (the Ladder VAE of Sønderby et al.
2016, VDVAE of Child 2021), and the prior its top-down path defines. The nets are in
``vae_lightning.topdown``.

How it presents its groups to the rest of the tool (the ``ForwardRecord`` of ``models``):

- ``mu``, ``logvar``, ``z`` (B, D): every group's posterior parameters and draw, flattened and
  concatenated, the top group first (``group_slices`` says which columns are group l);
- ``kl_dims`` (B, D): KL(q(z_l|x, z_<l) || p(z_l|z_<l)) per dimension, in closed form for each group
  given the record's draw of the groups above, so ``kl = kl_dims.sum(1)`` is the usual one-sample
  estimate of the total KL; summed per group it is ``kl_group/<l>``;
- the decoder is the top-down pass with every z_l given, and the prior (``TopDownPrior``) its
  conditional Gaussians, so ``decode``, ``prior.log_prob``, ``prior.sample``, the pictures, ``vae
  sample``, ``vae traverse`` and the anomaly scores work as for any model;
- ``encode`` gives the posterior along the mean path (each group's q given the means of the groups
  above), the deterministic code ``vae encode``, traversals and interpolations use;
- the importance-weighted bound draws its own samples of the hierarchical posterior
  (``draw_log_weights``): log w = log p(x|z) + Σ_l log p(z_l|z_<l) − Σ_l log q(z_l|x, z_<l).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from typing_extensions import override

from vae_lightning.errors import UserError
from vae_lightning.likelihoods import Likelihood
from vae_lightning.models import VAE, ForwardRecord
from vae_lightning.objectives import KLSchedule, Objective, gaussian_kl_pair, posterior
from vae_lightning.priors import Prior
from vae_lightning.topdown import BottomUp, TopDown, group_shapes


class TopDownPrior(Prior):
    """The prior of a ``HierarchicalVAE``: p(z) = Π_l p(z_l | z_<l), the top-down path's Gaussians.
    Built by the model (not a config choice); ``log_prob`` and ``sample`` run the top-down net."""

    closed_form = True  # per dimension, for each group given the groups above

    @property
    def kl_method(self) -> str:
        return "closed form per dimension, each group against its prior given the record's draw of the groups above"

    def attach(self, net: TopDown) -> None:
        # a plain attribute, not a submodule: the net's weights belong to the model's decoder
        object.__setattr__(self, "_net", net)

    def log_prob(self, z: Tensor) -> Tensor:
        p = self._net.run(len(z), mode="given", z=z.to(self._net.h_top.device))
        return posterior(p.p_mu, p.p_logvar).log_prob(p.z).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        with torch.no_grad():
            return self._net.run(n, mode="prior", temperature=temperature, generator=generator).z.cpu()


class HierarchicalVAE(VAE):
    """Top-down hierarchical VAE with L groups of latents (Ladder VAE / VDVAE style).

    A bottom-up pass over x, then a top-down pass over L groups z_1 … z_L that inference and
    generation share: p(z) = Π_l p(z_l | z_<l) and q(z|x) = Π_l q(z_l | x, z_<l), diagonal Gaussians
    computed from the same top-down state (the posterior also from the bottom-up activation), so the
    ELBO is E_q[log p(x|z)] − Σ_l E_q[KL(q(z_l|x, z_<l) || p(z_l|z_<l))], each group's KL in closed form
    given a draw of the groups above. Logged: ``kl_group/<l>`` (nats, batch mean, l = 0 the top group)
    and, at validation and test, ``active_units_group/<l>``. The latents are spatial (``groups`` per
    stage at growing resolutions, see ``vae_lightning.topdown``); D = Σ_l z_channels·r_l².

    Loss = recon + w(step)·Σ_l max(λ, E_batch[KL_l]) with λ = ``free_bits`` nats per group (Kingma
    et al. 2016; 0: the plain ELBO). VDVAE's gradient-skip guard is ``nonfinite.max_grad_norm``
    (``configs/mnist/hierarchical.yaml`` sets it), which stops after ``nonfinite.max_skips`` skips.

    Args:
        groups: latent groups per stage, the coarsest stage first (L = Σ groups).
        channels: width of the top-down state and the bottom-up activations.
        bottleneck: width inside each residual block.
        z_channels: feature maps per group.
        depth: deterministic residual blocks per stage, in each pass.
        stem: stride-2 convolutions between the image and the finest stage (1: it is at half the side).
        free_bits: λ ≥ 0, nats per group.
        likelihood, kl_schedule, optimizer, lr_scheduler, lr_interval, image_shape, iw_samples,
            compile, channels_last: as for ``VAE``.
    """

    def __init__(
        self,
        groups: Sequence[int] = (3, 2),
        channels: int = 64,
        bottleneck: int = 16,
        z_channels: int = 2,
        depth: int = 1,
        stem: int = 1,
        free_bits: float = 0.0,
        likelihood: Likelihood | None = None,
        kl_schedule: KLSchedule | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_interval: str = "step",
        image_shape: tuple[int, int, int] | None = None,
        iw_samples: int = 100,
        compile: bool | str = False,
        channels_last: bool = False,
    ) -> None:
        if image_shape is None:
            raise UserError("image_shape (C, H, W) is required; `vae` sets it from the data module.")
        if free_bits < 0:
            raise UserError(f"model.init_args.free_bits must be >= 0 nats per group, got {free_bits}.")
        for name, value in (("channels", channels), ("bottleneck", bottleneck), ("depth", depth)):
            if value < 1:
                raise UserError(f"model.init_args.{name} must be >= 1, got {value}.")
        try:
            shapes = group_shapes(image_shape, groups, z_channels, stem)
        except ValueError as err:
            raise UserError(f"model.init_args: {err}") from None
        self.group_dims = [c * h * w for c, h, w in shapes]
        self.terms = ("kl_weight", *(f"kl_group/{g}" for g in range(len(shapes))))  # read by VAE.__init__
        net = {"groups": list(groups), "channels": channels, "bottleneck": bottleneck, "depth": depth, "stem": stem}
        super().__init__(
            encoder=functools.partial(BottomUp, **net),
            decoder=functools.partial(TopDown, z_channels=z_channels, **net),
            likelihood=likelihood,
            latent_dim=sum(self.group_dims),
            kl_schedule=kl_schedule,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            lr_interval=lr_interval,
            image_shape=image_shape,
            iw_samples=iw_samples,
            compile=compile,
            channels_last=channels_last,
        )
        self.save_hyperparameters(logger=False)  # this class's arguments, not the nets VAE was given
        self.prior = TopDownPrior()  # in place of VAE's N(0, I): no parameters, no random draws
        self.prior.build(self.latent_dim, self.image_shape, self.encoder)
        self.prior.attach(self.decoder)
        self.free_bits = free_bits

    @property
    @override
    def group_slices(self) -> list[slice]:
        """The columns of z (and of mu, logvar, kl_dims) that hold each group, the top group first."""
        ends = torch.tensor(self.group_dims).cumsum(0).tolist()
        return [slice(end - d, end) for d, end in zip(self.group_dims, ends)]

    def group_kl(self, kl_dims: Tensor) -> Tensor:
        """The KL of each group (B, L) in nats, from the KL per dimension (B, D)."""
        return torch.stack([part.sum(1) for part in kl_dims.split(self.group_dims, dim=1)], dim=1)

    @override
    def objective(self, f: ForwardRecord, step: int, dataset_size: int | None) -> Objective:
        weight = self.kl_schedule(step)
        per_group = self.group_kl(f.kl_dims).mean(0)  # (L,)
        kl = per_group.clamp(min=self.free_bits).sum() if self.free_bits else per_group.sum()
        terms = {"kl_weight": weight, **{f"kl_group/{g}": kl_g for g, kl_g in enumerate(per_group)}}
        return Objective(f.recon.mean() + weight * kl, terms)

    @override
    def elbo_sample(self, x: Tensor) -> ForwardRecord:
        p = self.decoder.run(len(x), acts=self.encoder(x), mode="posterior")
        recon = -self.likelihood.log_prob(p.out, x)  # (B,)
        kl_dims = gaussian_kl_pair(p.q_mu, p.q_logvar, p.p_mu, p.p_logvar)  # (B, D)
        return ForwardRecord(x, p.q_mu, p.q_logvar, p.z, p.out, recon, kl_dims)

    @override
    def latent_values(self, stage: str, stats: dict[str, Tensor]) -> dict[str, Tensor]:
        values = super().latent_values(stage, stats)
        active = stats["mu_var"] > self.latent_metrics[stage].active.threshold
        values.update({f"active_units_group/{g}": active[s].sum().float() for g, s in enumerate(self.group_slices)})
        return values

    # ---- the Python API and the commands ------------------------------------------------------
    @override
    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x) along the mean path: each group's (mu, logvar) given the posterior means of the
        groups above; (B, D) each, float32."""
        x = x.to(self.device).float()
        p = self.decoder.run(len(x), acts=self.encoder(x), mode="mean")
        return p.q_mu.float(), p.q_logvar.float()

    @override
    @torch.no_grad()
    def draw_posterior(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One draw z ~ q(z|x) (B, D) float32 on the CPU, group by group (``vae encode --sample``)."""
        x = x.to(self.device).float()
        return self.decoder.run(len(x), acts=self.encoder(x), mode="posterior", generator=generator).z.cpu()

    @override
    @torch.no_grad()
    def prior_latents(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        """n ancestral draws z ~ p(z) (n, D) on the CPU; ``temperature`` T scales every group's prior
        standard deviation (VDVAE's sampling temperature)."""
        return self.prior.sample(n, generator, temperature)

    @torch.no_grad()
    def draw_log_weights(self, x: Tensor, n: int) -> Tensor:
        """log w = log p(x|z) + log p(z) − log q(z|x) (n, B) in nats for n draws z ~ q(z|x) of each
        input of x (B, C, H, W): one bottom-up pass, n top-down passes as one batch of n·B."""
        acts = [a.repeat(n, 1, 1, 1) for a in self.encoder(x)]  # (n·B, …), draw-major
        p = self.decoder.run(n * len(x), acts=acts, mode="posterior")
        log_px = self.likelihood.log_prob(p.out, x.repeat(n, 1, 1, 1))
        log_pz = posterior(p.p_mu, p.p_logvar).log_prob(p.z).sum(1)
        log_qz = posterior(p.q_mu, p.q_logvar).log_prob(p.z).sum(1)
        return (log_px + log_pz - log_qz).view(n, len(x))
