"""Encoder and decoder networks: plain ``nn.Module``s that know nothing of Lightning.

In YAML a net is named by ``class_path`` with its own ``init_args`` (hidden sizes, channels);
the model calls it with the data's image shape and the latent size, so those two are never
repeated in a config:

    encoder = ConvEncoder(image_shape=(1, 64, 64), latent_dim=10, channels=(32, 32, 64, 64))
    mu, logvar = encoder(x)        # x: (B, C, H, W) -> (B, D), (B, D)
    decoder = ConvDecoder(image_shape=(1, 64, 64), latent_dim=10, channels=(32, 32, 64, 64))
    out = decoder(z)               # z: (B, D) -> (B, C, H, W), the likelihood's parameter
"""

from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor, nn

Shape = tuple[int, int, int]  # (C, H, W)

CONV_SIZES = (28, 32, 64)


def _check_shape(net: str, image_shape: Sequence[int]) -> Shape:
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"{net} got image shape {tuple(image_shape)}; it needs (channels, height, width).")
    return tuple(int(s) for s in image_shape)  # type: ignore[return-value]


def _check_conv_shape(net: str, image_shape: Sequence[int]) -> Shape:
    c, h, w = _check_shape(net, image_shape)
    if h != w or h not in CONV_SIZES:
        raise ValueError(
            f"{net} got images of shape {(c, h, w)}; it supports square images of "
            f"{', '.join(map(str, CONV_SIZES))} px (resize the data or use MLPEncoder/MLPDecoder)."
        )
    return c, h, w


def _check_depth(net: str, size: int, channels: Sequence[int]) -> None:
    if not channels or size >> len(channels) < 1:
        raise ValueError(
            f"{net} with {len(channels)} stride-2 layers cannot handle {size} px images; "
            f"give channels between 1 and {int(math.log2(size))} entries."
        )


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Encoder(nn.Module, metaclass=ABCMeta):
    """Base class of the encoders.

    The role of an encoder, and the type of ``model.init_args.encoder``: a subclass is built as
    ``Encoder(image_shape, latent_dim, **init_args)`` and maps images x (B, C, H, W) to the
    posterior's parameters (mu, logvar), each (B, D). A user's encoder subclasses this, so that
    help and error messages list our encoders and the user's, not every ``nn.Module``."""

    @abstractmethod
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C, H, W) -> mu, logvar (B, D)."""


class Decoder(nn.Module, metaclass=ABCMeta):
    """Base class of the decoders.

    The role of a decoder, and the type of ``model.init_args.decoder``: a subclass is built as
    ``Decoder(image_shape, latent_dim, **init_args)`` and maps latents z (B, D) to the
    likelihood's parameter (B, C, H, W)."""

    @abstractmethod
    def forward(self, z: Tensor) -> Tensor:
        """z (B, D) -> the likelihood's parameter (B, C, H, W)."""


class MLPEncoder(Encoder):
    """Fully connected encoder: x (B, C, H, W) -> mu, logvar (B, D).

    Args:
        image_shape: (C, H, W) of the data, passed in by the model.
        latent_dim: D, passed in by the model.
        hidden: widths of the hidden layers.
    """

    def __init__(self, image_shape: Shape, latent_dim: int, hidden: Sequence[int] = (512, 256)) -> None:
        super().__init__()
        image_shape = _check_shape("MLPEncoder", image_shape)
        self.net = _mlp([math.prod(image_shape), *hidden, 2 * latent_dim])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(x.flatten(1)).chunk(2, dim=1)  # (B, D), (B, D)


class MLPDecoder(Decoder):
    """Fully connected decoder: z (B, D) -> likelihood parameter (B, C, H, W).

    Args:
        image_shape: (C, H, W) of the data, passed in by the model.
        latent_dim: D, passed in by the model.
        hidden: widths of the hidden layers.
    """

    def __init__(self, image_shape: Shape, latent_dim: int, hidden: Sequence[int] = (256, 512)) -> None:
        super().__init__()
        self.image_shape = _check_shape("MLPDecoder", image_shape)
        self.net = _mlp([latent_dim, *hidden, math.prod(self.image_shape)])

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.image_shape)  # (B, C, H, W)


class ConvEncoder(Encoder):
    """DCGAN-style encoder: 4x4 stride-2 convolutions, then a linear layer to (mu, logvar).

    Args:
        image_shape: (C, H, W) with H = W in {28, 32, 64}, passed in by the model.
        latent_dim: D, passed in by the model.
        channels: output channels of each stride-2 convolution; each halves the image side.
        hidden: width of the linear layer before (mu, logvar); 0 for none.
    """

    def __init__(
        self, image_shape: Shape, latent_dim: int, channels: Sequence[int] = (32, 32, 64, 64), hidden: int = 256
    ) -> None:
        super().__init__()
        c, h, _ = _check_conv_shape("ConvEncoder", image_shape)
        _check_depth("ConvEncoder", h, channels)
        layers: list[nn.Module] = []
        for c_in, c_out in zip([c, *channels[:-1]], channels):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        self.conv = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            n_flat = self.conv(torch.zeros(1, *image_shape)).shape[1]
        head = (
            [nn.Linear(n_flat, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim)]
            if hidden
            else [nn.Linear(n_flat, 2 * latent_dim)]
        )
        self.head = nn.Sequential(*head)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.conv(x)).chunk(2, dim=1)  # (B, D), (B, D)


class ConvDecoder(Decoder):
    """Convolutional decoder, the mirror of ConvEncoder.

    DCGAN-style decoder, the mirror of ``ConvEncoder``: linear layer, then 4x4 stride-2
    transposed convolutions. 28 px images are generated at 32 px and center-cropped.

    Args:
        image_shape: (C, H, W) with H = W in {28, 32, 64}, passed in by the model.
        latent_dim: D, passed in by the model.
        channels: channels in encoder order; the decoder uses them reversed.
        hidden: width of the first linear layer; 0 for none.
    """

    def __init__(
        self, image_shape: Shape, latent_dim: int, channels: Sequence[int] = (32, 32, 64, 64), hidden: int = 256
    ) -> None:
        super().__init__()
        c, h, _ = _check_conv_shape("ConvDecoder", image_shape)
        _check_depth("ConvDecoder", h, channels)
        n = len(channels)
        self.size = h
        self.start = math.ceil(h / 2**n)  # side before the first upsampling
        rev = list(channels)[::-1]
        n_flat = rev[0] * self.start**2
        head = (
            [nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_flat)]
            if hidden
            else [nn.Linear(latent_dim, n_flat)]
        )
        self.head = nn.Sequential(*head, nn.ReLU(), nn.Unflatten(1, (rev[0], self.start, self.start)))
        layers: list[nn.Module] = []
        for c_in, c_out in zip(rev, rev[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.ConvTranspose2d(rev[-1], c, 4, stride=2, padding=1))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        out = self.deconv(self.head(z))  # (B, C, start * 2^n, start * 2^n)
        crop = (out.shape[-1] - self.size) // 2
        if crop:
            out = out[..., crop : crop + self.size, crop : crop + self.size]
        return out  # (B, C, H, W)
