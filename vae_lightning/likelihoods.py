"""Observation models p(x|z). The decoder outputs one tensor ``out`` of the data's shape
(B, C, H, W); a likelihood turns it into a distribution over x and scores the data.

``log_prob(out, x)`` returns log p(x|z) per example, shape (B,), in nats, summed over all
C·H·W pixels. It is computed in float32 whatever the autocast precision.
"""

from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli as _Bernoulli
from torch.distributions import Independent, Normal

from vae_lightning.errors import UserError


class Likelihood(nn.Module, metaclass=ABCMeta):
    """Base class of the likelihoods p(x|z).

    Base class, and the type of ``model.init_args.likelihood``. Subclasses implement
    ``dist(out)``, a distribution over one example's pixels (abstract, so help lists only them)."""

    #: True when the likelihood is a probability mass over {0, 1} pixels (needs binary data).
    discrete: bool = False

    def build(self, image_shape: tuple[int, int, int]) -> None:
        """Called by the model with the data's (C, H, W) before training; sizes parameters."""

    @abstractmethod
    def dist(self, out: Tensor) -> Independent:
        """The distribution p(x|z) of a batch, from the decoder's output ``out`` (B, C, H, W)."""

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        return self.dist(out).log_prob(x.float())  # (B,)

    def mean(self, out: Tensor) -> Tensor:
        """E[x|z], shape (B, C, H, W), for pictures and reconstruction errors."""
        return self.dist(out).mean

    def sample(self, out: Tensor) -> Tensor:
        return self.dist(out).sample()


class Bernoulli(Likelihood):
    """Bernoulli pixels for binary data; the decoder outputs logits.

    Bernoulli per pixel with the decoder output as logits. Data must be binary {0, 1}:
    binary data sets (sprites) or gray images binarized dynamically or with a fixed draw."""

    discrete = True

    def dist(self, out: Tensor) -> Independent:
        # validate_args=False: x is checked once per data set, not on every step.
        return Independent(_Bernoulli(logits=out.float(), validate_args=False), 3)


class Gaussian(Likelihood):
    """Gaussian pixels with a fixed standard deviation.

    Gaussian per pixel, mean = decoder output, fixed standard deviation ``sigma``.

    Args:
        sigma: standard deviation in data units (pixels scaled to [0, 1]).
    """

    def __init__(self, sigma: float = 0.1) -> None:
        super().__init__()
        if not sigma > 0:
            raise UserError(f"Gaussian(sigma={sigma}): sigma must be > 0.")
        self.sigma = sigma

    def dist(self, out: Tensor) -> Independent:
        out = out.float()
        return Independent(Normal(out, torch.full_like(out, self.sigma), validate_args=False), 3)


class LearnedGaussian(Likelihood):
    """Gaussian per pixel, mean = decoder output, one learned standard deviation per channel.

    Args:
        init_sigma: starting standard deviation.
        min_sigma: lower bound on sigma; a free sigma can shrink towards 0 and make the
            density unbounded on data with repeated values (e.g. all-black backgrounds).
    """

    def __init__(self, init_sigma: float = 0.1, min_sigma: float = 1e-3) -> None:
        super().__init__()
        if not 0 < min_sigma < init_sigma:
            raise UserError(
                f"LearnedGaussian(init_sigma={init_sigma}, min_sigma={min_sigma}): need 0 < min_sigma < init_sigma."
            )
        self.init_sigma, self.min_sigma = init_sigma, min_sigma
        self.log_sigma = nn.Parameter(torch.empty(0))  # sized by build() once C is known

    def build(self, image_shape: tuple[int, int, int]) -> None:
        value = math.log(self.init_sigma - self.min_sigma)
        self.log_sigma = nn.Parameter(torch.full((image_shape[0],), value))

    @property
    def sigma(self) -> Tensor:  # (C,)
        return self.log_sigma.float().exp() + self.min_sigma

    def dist(self, out: Tensor) -> Independent:
        out = out.float()
        scale = self.sigma.view(1, -1, 1, 1).expand_as(out)
        return Independent(Normal(out, scale, validate_args=False), 3)
