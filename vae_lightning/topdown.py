"""The nets of ``HierarchicalVAE``: a bottom-up pass over the image and a top-down pass over L groups
of latents, in the style of the Ladder VAE (Sønderby et al. 2016) and VDVAE (Child 2021). Plain
``nn.Module``s; they know nothing of Lightning.

The top-down path works at ``len(groups)`` resolutions, the coarsest first, each stage at twice the
side of the one before and the last at half the image's: for 28 px images ``groups: [3, 2]`` puts
3 groups at 7 × 7 and 2 at 14 × 14. A group is ``z_channels`` maps at its stage's resolution, so it
has z_channels·r² dimensions; the model's z (B, D) is every group flattened (channels, then rows),
the top group (the first one sampled) first::

    bottom-up:  x ─ conv/2 ─ res ─ a(14) ─ pool ─ res ─ a(7)
    top-down:   h (learned, 7×7) ─ res ─ [group: p(z|h), q(z|h, a(7)), h += proj(z), res] × 3
                ─ up ─ res ─ [group … a(14)] × 2 ─ deconv ─ out (B, C, H, W)

Each group's prior p(z_l | z_<l) and posterior q(z_l | x, z_<l) are diagonal Gaussians computed from
the same top-down state h: the path is shared by inference and generation (the decoder), and the
posterior adds the bottom-up activation of its resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_lightning.errors import UserError
from vae_lightning.nets import Decoder, Shape, _check_shape
from vae_lightning.objectives import LOGVAR_MAX, LOGVAR_MIN

#: how a top-down pass picks each group's z: a draw from q, q's mean, a draw from p, or the z given
MODES = ("posterior", "mean", "prior", "given")


def group_shapes(image_shape: Sequence[int], groups: Sequence[int], z_channels: int, stem: int = 1) -> list[Shape]:
    """(z_channels, r, r) of every group, the top group first, for ``groups`` per stage and ``stem``
    stride-2 convolutions before the finest stage (see the module doc); ``ValueError`` for a shape
    the stages cannot halve."""
    c, h, w = _check_shape("HierarchicalVAE", image_shape)
    if stem < 1:
        raise UserError(f"stem must be >= 1 (stride-2 convolutions before the finest stage), got {stem}.")
    stages = len(groups) + stem - 1
    if not groups or min(groups) < 0 or sum(groups) < 1:
        raise UserError(f"groups must list the latent groups of each stage (>= 0 each, >= 1 in all), got {groups}.")
    if z_channels < 1:
        raise UserError(f"z_channels must be >= 1, got {z_channels}.")
    if h != w or h % 2**stages:
        raise UserError(
            f"HierarchicalVAE with {len(groups)} stages and stem {stem} needs square images whose side divides "
            f"by {2**stages}, got {(c, h, w)}; use fewer stages (entries of groups) or a smaller stem."
        )
    sides = [h // 2 ** (stages - s) for s in range(len(groups))]
    return [(z_channels, side, side) for side, n in zip(sides, groups) for _ in range(n)]


class Block(nn.Module):
    """VDVAE's bottleneck block: GELU, 1×1 conv (c_in → mid), GELU, 3×3, GELU, 3×3, GELU, 1×1 (mid →
    c_out); with ``residual`` (c_in = c_out) x + f(x). ``last_scale`` scales the last conv's initial
    weights (0: the block starts as its residual or as zeros)."""

    def __init__(self, c_in: int, mid: int, c_out: int, residual: bool = False, last_scale: float = 1.0) -> None:
        super().__init__()
        self.residual = residual
        self.convs = nn.ModuleList(
            [nn.Conv2d(c_in, mid, 1), nn.Conv2d(mid, mid, 3, padding=1), nn.Conv2d(mid, mid, 3, padding=1)]
            + [nn.Conv2d(mid, c_out, 1)]
        )
        with torch.no_grad():
            self.convs[-1].weight.mul_(last_scale)
            self.convs[-1].bias.mul_(last_scale)

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for conv in self.convs:
            y = conv(F.gelu(y))
        return x + y if self.residual else y


def _widths(channels: int, stem: int) -> list[int]:
    """Channels after each stem convolution, halving back from ``channels`` (the finest stage's)."""
    return [max(1, channels >> (stem - 1 - i)) for i in range(stem)]


def _noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard-normal noise of ``like``'s shape, float32: from ``generator`` (on the CPU, then moved)
    when given, else from torch's global generator on the device."""
    if generator is None:
        return torch.randn(like.shape, device=like.device)
    return torch.randn(like.shape, generator=generator).to(like.device)


class GroupBlock(nn.Module):
    """One stochastic group of the top-down path, on a state h (B, C, r, r): p(z|h) and, given the
    bottom-up activation a, q(z|h, a), both diagonal Gaussians (z_channels maps); then h + proj(z)
    through a residual block. Returns the new h, z (float32) and the four parameters (B, z, r, r)."""

    def __init__(self, channels: int, mid: int, z_channels: int, scale: float) -> None:
        super().__init__()
        self.z_channels = z_channels
        # zero-initialised: p(z|h) starts as N(0, I) and adds nothing to h (VDVAE)
        self.prior = Block(channels, mid, 2 * z_channels + channels, last_scale=0.0)
        self.posterior = Block(2 * channels, mid, 2 * z_channels)
        self.z_proj = nn.Conv2d(z_channels, channels, 1)
        self.res = Block(channels, mid, channels, residual=True, last_scale=scale)
        with torch.no_grad():
            self.z_proj.weight.mul_(scale)

    def forward(
        self,
        h: Tensor,
        a: Tensor | None,
        mode: str,
        z: Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor, Tensor]:
        zc = self.z_channels
        p_mu, p_logvar, h_p = self.prior(h).split([zc, zc, h.shape[1]], dim=1)
        q_mu = q_logvar = None
        if a is not None:
            q_mu, q_logvar = self.posterior(torch.cat([h, a], dim=1)).chunk(2, dim=1)
        if mode == "posterior":
            z = q_mu.float() + _std(q_logvar) * _noise(q_mu, generator)
        elif mode == "mean":
            z = q_mu.float()
        elif mode == "prior":
            z = p_mu.float() + temperature * _std(p_logvar) * _noise(p_mu, generator)
        h = h + h_p + self.z_proj(z.to(h.dtype))
        return self.res(h), z, q_mu, q_logvar, p_mu, p_logvar


def _std(logvar: Tensor) -> Tensor:
    return torch.exp(0.5 * logvar.float().clamp(LOGVAR_MIN, LOGVAR_MAX))


class BottomUp(nn.Module):
    """The bottom-up pass: x (B, C, H, W) -> one activation (B, channels, r, r) per stage, the
    coarsest first (the top-down order). ``stem`` stride-2 convs (4×4, GELU between) to the finest
    stage, then per stage ``depth`` residual blocks, average-pooled by 2 between stages.

    Args:
        image_shape: (C, H, W), passed in by the model.
        latent_dim: D, passed in by the model (unused: the latents are drawn top-down).
        groups, channels, bottleneck, depth, stem: as for ``TopDown``.
    """

    def __init__(
        self,
        image_shape: Shape,
        latent_dim: int,
        groups: Sequence[int] = (3, 2),
        channels: int = 64,
        bottleneck: int = 16,
        depth: int = 1,
        stem: int = 1,
    ) -> None:
        super().__init__()
        group_shapes(image_shape, groups, 1, stem)  # refuses shapes the stages cannot halve
        scale = 1 / math.sqrt(max(1, depth * len(groups)))
        widths = [image_shape[0], *_widths(channels, stem)]
        convs = [nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in zip(widths, widths[1:])]
        self.stem = nn.Sequential(*[m for conv in convs for m in (conv, nn.GELU())][:-1])
        self.stages = nn.ModuleList(
            nn.Sequential(*[Block(channels, bottleneck, channels, True, scale) for _ in range(depth)]) for _ in groups
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        h, acts = self.stem(x), []  # (B, channels, H/2^stem, W/2^stem)
        for s, blocks in enumerate(self.stages):  # the finest stage first
            h = blocks(F.avg_pool2d(h, 2) if s else h)
            acts.append(h)
        return acts[::-1]


class TopDownPass(NamedTuple):
    """One top-down pass over a batch of n: the decoder's output (n, C, H, W), z (n, D) float32, and the
    parameters of every group's posterior (None without activations) and prior, each (n, D), flattened
    and concatenated as z is."""

    out: Tensor
    z: Tensor
    q_mu: Tensor | None
    q_logvar: Tensor | None
    p_mu: Tensor
    p_logvar: Tensor


class TopDown(Decoder):
    """The top-down pass of ``HierarchicalVAE``, shared by inference and generation: as a ``Decoder``,
    z (B, D) -> the likelihood's parameter (B, C, H, W) with every group's z given; ``run`` also draws
    the groups (from q given bottom-up activations, or from p) and returns both distributions.

    Args:
        image_shape: (C, H, W), passed in by the model.
        latent_dim: D, passed in by the model: Σ_l z_channels·r_l² over the groups.
        groups: latent groups per stage, the coarsest stage first (see the module doc); L = Σ groups.
        channels: width of the top-down state (and of the bottom-up activations).
        bottleneck: width inside each block (VDVAE uses a quarter of ``channels``).
        z_channels: feature maps per group.
        depth: deterministic residual blocks per stage (before its groups; the bottom-up pass has as many).
        stem: stride-2 convolutions between the image and the finest stage (4×4, transposed here),
            their widths halving from ``channels``: the finest stage is at 1/2^stem of the image side.
    """

    def __init__(
        self,
        image_shape: Shape,
        latent_dim: int,
        groups: Sequence[int] = (3, 2),
        channels: int = 64,
        bottleneck: int = 16,
        z_channels: int = 2,
        depth: int = 1,
        stem: int = 1,
    ) -> None:
        super().__init__()
        self.shapes = group_shapes(image_shape, groups, z_channels, stem)
        self.dims = [math.prod(s) for s in self.shapes]
        if latent_dim != sum(self.dims):
            raise UserError(f"TopDown with groups {list(groups)} has {sum(self.dims)} dimensions, got {latent_dim}.")
        self.groups = list(groups)
        side = image_shape[1] // 2 ** (len(groups) + stem - 1)  # the coarsest stage
        scale = 1 / math.sqrt(max(1, len(self.shapes) + depth * len(groups)))
        self.h_top = nn.Parameter(torch.zeros(1, channels, side, side))
        self.stages = nn.ModuleList(
            nn.Sequential(*[Block(channels, bottleneck, channels, True, scale) for _ in range(depth)]) for _ in groups
        )
        self.blocks = nn.ModuleList(GroupBlock(channels, bottleneck, z_channels, scale) for _ in self.shapes)
        widths = [*_widths(channels, stem)[::-1], image_shape[0]]
        deconvs = [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1) for a, b in zip(widths, widths[1:])]
        self.out = nn.Sequential(*[m for conv in deconvs for m in (nn.GELU(), conv)])

    def forward(self, z: Tensor) -> Tensor:
        return self.run(len(z), mode="given", z=z).out

    def run(
        self,
        n: int,
        acts: list[Tensor] | None = None,
        mode: str = "posterior",
        z: Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> TopDownPass:
        """The top-down pass over a batch of n. ``acts``: the bottom-up activations (``BottomUp``),
        needed by the modes ``posterior`` (z_l ~ q) and ``mean`` (z_l = q's mean), optional for
        ``given`` (``z`` (n, D): every group's value); ``prior`` draws z_l ~ p with its standard
        deviation times ``temperature``. Draws come from ``generator`` (CPU) when given."""
        if mode not in MODES or (mode in ("posterior", "mean") and acts is None) or (mode == "given" and z is None):
            raise ValueError(f"TopDown.run: mode {mode!r} with acts={acts is not None}, z={z is not None}.")
        given = list(z.float().split(self.dims, dim=1)) if mode == "given" else None
        h = self.h_top.expand(n, -1, -1, -1)
        parts: list[list[Tensor]] = [[] for _ in range(5)]  # z, q_mu, q_logvar, p_mu, p_logvar
        group = 0
        for s, blocks in enumerate(self.stages):
            h = blocks(F.interpolate(h, scale_factor=2.0, mode="nearest") if s else h)
            for _ in range(self.groups[s]):
                z_l = given[group].view(n, *self.shapes[group]) if given else None
                h, *values = self.blocks[group](h, acts[s] if acts else None, mode, z_l, temperature, generator)
                for part, value in zip(parts, values):
                    part.append(None if value is None else value.flatten(1))
                group += 1
        z_all, q_mu, q_logvar, p_mu, p_logvar = (None if p[0] is None else torch.cat(p, dim=1) for p in parts)
        return TopDownPass(self.out(h), z_all, q_mu, q_logvar, p_mu, p_logvar)
