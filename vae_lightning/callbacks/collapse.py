"""Posterior-collapse monitor: pictures of the KL per latent dimension and a plain warning when
the latent code stops carrying information."""

from __future__ import annotations

import io

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from vae_lightning.callbacks.images import log_image, picture_dir
from vae_lightning.errors import UserError

REMEDIES = (
    "Remedies in this tool (docs/zoo.md, 'Posterior collapse', measures them on an autoregressive decoder): "
    "free bits (model.class_path: vae_lightning.FreeBitsVAE, init_args.free_bits: λ nats per dimension), "
    "a KL warm-up (model.init_args.kl_schedule: vae_lightning.LinearWarmup or vae_lightning.Cyclical), "
    "β < 1 (model.class_path: vae_lightning.BetaVAE, init_args.beta below 1), or a weaker decoder "
    "(vae_lightning.PixelCNNDecoder: fewer layers, a smaller receptive field; other decoders: fewer channels "
    "or hidden units, or vae_lightning.MLPDecoder)."
)

#: I(x; z) under this many nats counts as none (a collapsed model's estimate is ~1e-5 nats)
MI_FLOOR = 0.01
#: nats the KL must rise above its lowest value in validations without information before a warning
KL_RISE = 0.5
OFFSET_REMEDIES = (
    "Remedies: let the code carry information before the KL is asked for (for the capacity form, a KL warm-up "
    "model.init_args.kl_schedule: vae_lightning.LinearWarmup scales γ·|kl − C|; or raise C more slowly, a larger "
    "model.init_args.c_steps), or a smaller model.init_args.gamma."
)


def kl_bar_chart(kl_per_dim: Tensor, mu_var: Tensor | None = None, threshold: float = 0.01) -> Tensor:
    """A bar chart of the KL per latent dimension (nats) as an image (3, H, W) in [0, 1];
    dimensions that are not active units (Var_x(μ_u) ≤ threshold) are drawn in gray."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    kl = kl_per_dim.float().cpu().numpy()
    active = np.ones_like(kl, bool) if mu_var is None else (mu_var.float().cpu().numpy() > threshold)
    # a quarter inch per bar, at most 20 inches: a hierarchical model has hundreds of dimensions
    fig, ax = plt.subplots(figsize=(min(20.0, max(5.0, 0.25 * len(kl) + 1.5)), 2.6), dpi=80)
    ax.bar(np.arange(len(kl)), kl, color=np.where(active, "tab:blue", "tab:gray"))
    ax.set_xlabel("latent dimension (gray: inactive)")
    ax.set_ylabel("KL (nats)")
    ax.set_title(f"KL per dimension: {kl.sum():.2f} nats in all, {int(active.sum())}/{len(kl)} active", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    image = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


class CollapseMonitor(Callback):
    """Draws the KL per latent dimension and warns once of posterior collapse.

    After every validation: draws the KL per latent dimension (``images/kl_per_dim``, W&B and
    PNG in the run's picture folder) and warns once, in plain words, when the posterior
    collapses — no active unit (the model logs ``val/active_units``), or the total KL under
    ``kl_threshold`` nats for ``patience`` validations in a row. It also warns once when the KL
    rises by more than ``KL_RISE`` nats over validations with no active unit and ``val/mi`` under
    ``MI_FLOOR``: KL paid without information, an input-independent shift or width of the codes
    (what an objective with a KL target, BetaVAE's capacity form, can settle into). On by default;
    rank zero only.
    The total is the model's own KL(q(z|x) || p(z)) under its prior. The bars are
    KL(q(z_u|x) || N(0, 1)): with the standard-normal prior they are the ELBO's terms; with a
    learned prior the KL does not split by dimension, so the bars measure each dimension's
    distance from N(0, 1) and the gray (inactive) bars are the per-dimension collapse signal.

    Args:
        enabled: False turns the monitor off.
        kl_threshold: total KL per example, in nats, under which the code carries almost nothing.
        patience: consecutive validations under ``kl_threshold`` before warning.
        every_n_val: draw the bar chart at every n-th validation (0: never; the warning still works).
    """

    def __init__(
        self, enabled: bool = True, kl_threshold: float = 0.1, patience: int = 3, every_n_val: int = 1
    ) -> None:
        if kl_threshold < 0 or patience < 1 or every_n_val < 0:
            raise UserError(
                f"CollapseMonitor needs kl_threshold >= 0, patience >= 1 and every_n_val >= 0; got {kl_threshold}, "
                f"{patience}, {every_n_val}."
            )
        self.enabled, self.kl_threshold, self.patience, self.every_n_val = enabled, kl_threshold, patience, every_n_val
        self.low_kl_count = 0
        self.warned = False
        self.no_info_kl: float | None = None  # lowest KL of the current run of validations without information
        self.warned_no_info = False
        self._count = 0

    def message(self, kl: float, active: int, dims: int) -> str | None:
        """The warning for one validation's total KL and active units, or None; counts patience."""
        self.low_kl_count = self.low_kl_count + 1 if kl < self.kl_threshold else 0
        if active == 0:
            return (
                f"Posterior collapse: none of the {dims} latent dimensions is active (the encoder gives every "
                f"input nearly the same code; total KL {kl:.3f} nats), so the decoder ignores z. {REMEDIES}"
            )
        if self.low_kl_count >= self.patience:
            return (
                f"Posterior collapse: the KL has stayed under {self.kl_threshold} nats for {self.low_kl_count} "
                f"validations ({kl:.3f} nats now, {active}/{dims} active dimensions), so the code carries almost "
                f"no information about the input. {REMEDIES}"
            )
        return None

    def no_info_message(self, kl: float, mi: float, active: int) -> str | None:
        """The warning for a KL that rises while the code carries no information (no active unit,
        MI under ``MI_FLOOR``), or None; tracks the lowest KL since information was last seen."""
        if active > 0 or mi >= MI_FLOOR:
            self.no_info_kl = None
            return None
        low = self.no_info_kl = kl if self.no_info_kl is None else min(self.no_info_kl, kl)
        if kl - low <= KL_RISE:
            return None
        return (
            f"KL without information: the KL rose from {low:.2f} to {kl:.2f} nats while no latent dimension is "
            f"active and the mutual information I(x; z) is {mi:.3f} nats, so the encoder pays the KL with the same "
            f"shift or width for every input, not with information about it (a KL target, such as BetaVAE's capacity "
            f"C, is met without a code). {OFFSET_REMEDIES}"
        )

    @override
    @rank_zero_only
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        stats = getattr(pl_module, "latent_stats", {}).get("val")
        if not self.enabled or trainer.sanity_checking or stats is None:
            return
        kl_per_dim = stats["kl_per_dim"]
        kl = stats["kl"] if "kl" in stats else kl_per_dim.sum()
        text = self.message(float(kl), int(stats["active_units"]), len(kl_per_dim))
        if text and not self.warned:
            self.warned = True
            rank_zero_warn(text)
        no_info = (
            self.no_info_message(float(kl), float(stats["mi"]), int(stats["active_units"])) if "mi" in stats else None
        )
        if no_info and not self.warned_no_info:
            self.warned_no_info = True
            rank_zero_warn(no_info)
        self._count += 1
        if self.every_n_val and self._count % self.every_n_val == 0:
            step = trainer.global_step
            path = picture_dir(trainer) / f"kl_per_dim_step{step:07d}.png"
            log_image(trainer, "images/kl_per_dim", kl_bar_chart(kl_per_dim, stats["mu_var"]), path)

    @override
    def state_dict(self) -> dict:
        return {
            "low_kl_count": self.low_kl_count,
            "warned": self.warned,
            "no_info_kl": self.no_info_kl,
            "warned_no_info": self.warned_no_info,
        }

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self.low_kl_count = state_dict.get("low_kl_count", 0)
        self.warned = state_dict.get("warned", False)
        self.no_info_kl = state_dict.get("no_info_kl")
        self.warned_no_info = state_dict.get("warned_no_info", False)
