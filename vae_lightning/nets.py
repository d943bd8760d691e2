"""Encoder and decoder networks: plain ``nn.Module``s that know nothing of Lightning.

In YAML a net is named by ``class_path`` with its own ``init_args`` (hidden sizes, channels);
the model calls it with the data's image shape and the latent size, so those two are never
repeated in a config:

    encoder = ConvEncoder(image_shape=(1, 64, 64), latent_dim=10, channels=(32, 32, 64, 64))
    mu, logvar = encoder(x)        # x: (B, C, H, W) -> (B, D), (B, D)
    decoder = ConvDecoder(image_shape=(1, 64, 64), latent_dim=10, channels=(32, 32, 64, 64))
    out = decoder(z)               # z: (B, D) -> (B, C, H, W), the likelihood's parameter

An autoregressive decoder (``PixelCNNDecoder``, ``autoregressive = True``) also reads the image:
``out = decoder(z, x)`` gives pixel i's parameter from z and x's pixels before i (teacher
forcing), and ``decoder.generate(z, choose)`` draws images pixel by pixel. Callers that score x
go through ``decoder_output(decoder, z, x)``, which serves both kinds.
"""

from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from vae_lightning.errors import UserError

Shape = tuple[int, int, int]  # (C, H, W)

CONV_SIZES = (28, 32, 64)


def _check_shape(net: str, image_shape: Sequence[int]) -> Shape:
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise UserError(f"{net} got image shape {tuple(image_shape)}; it needs (channels, height, width).")
    return tuple(int(s) for s in image_shape)  # type: ignore[return-value]


def _check_conv_shape(net: str, image_shape: Sequence[int]) -> Shape:
    c, h, w = _check_shape(net, image_shape)
    if h != w or h not in CONV_SIZES:
        raise UserError(
            f"{net} got images of shape {(c, h, w)}; it supports square images of "
            f"{', '.join(map(str, CONV_SIZES))} px (resize the data or use MLPEncoder/MLPDecoder)."
        )
    return c, h, w


def _check_depth(net: str, size: int, channels: Sequence[int]) -> None:
    if not channels or size >> len(channels) < 1:
        raise UserError(
            f"{net} with {len(channels)} stride-2 layers cannot handle {size} px images; "
            f"give channels between 1 and {int(math.log2(size))} entries."
        )


def _check_widths(net: str, arg: str, widths: Sequence[int]) -> None:
    if any(w < 1 for w in widths):
        raise UserError(f"{net} {arg} must be layer widths >= 1, got {list(widths)}.")


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

    #: True when pixel i's parameter depends on the pixels before it: ``forward(z, x)`` then
    #: needs the image (teacher forcing) and images are drawn with ``generate`` (``PixelCNNDecoder``)
    autoregressive: bool = False

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
        _check_widths("MLPEncoder", "hidden", hidden)
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
        _check_widths("MLPDecoder", "hidden", hidden)
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
        _check_widths("ConvEncoder", "channels", channels)
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
        _check_widths("ConvDecoder", "channels", channels)
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


def decoder_output(decoder: nn.Module, z: Tensor, x: Tensor) -> Tensor:
    """The likelihood's parameter (N, C, H, W) for scoring images x under p(x|z): ``decoder(z)``,
    or ``decoder(z, x)`` for an autoregressive decoder (pixel i's parameter from z and the pixels
    of x before i). z is (N, D), x (B, C, H, W) with N = n·B: draw j of image b is row j·B + b."""
    if getattr(decoder, "autoregressive", False):
        return decoder(z, x)
    return decoder(z)


def _gate(a: Tensor) -> Tensor:
    """tanh(a_f) ⊙ σ(a_g) over the two halves of the channels (van den Oord et al. 2016b, eq. 2)."""
    f, g = a.chunk(2, 1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedLayer(nn.Module):
    """One layer of the gated PixelCNN (van den Oord et al. 2016b, figure 2): a vertical stack
    that sees the rows above a pixel and a horizontal stack that sees the pixels left of it.

    Vertical: a (p+1)×k convolution over the rows at and above each pixel (p = k // 2, k odd);
    its features reach the horizontal stack shifted down one row, so pixel (r, c) sees rows < r.
    Horizontal: a 1×(p+1) convolution over columns c − p … c (mask B), or c − p − 1 … c − 1 in
    the first layer (mask A: the pixel's own value is hidden), plus the vertical stack's
    features through a 1×1 convolution, plus the z map; gated; a 1×1 convolution; a residual
    connection (none in the first layer, whose input is the image). The vertical stack is not
    conditioned on z, so its features depend on x alone and serve every draw of z at once.
    """

    def __init__(self, c_in: int, channels: int, kernel: int, first: bool) -> None:
        super().__init__()
        p = kernel // 2
        self.first = first
        # padding (p + 1) rows on top: output row j covers input rows j − p − 1 … j − 1, so rows
        # 1 … H are the stack's own features (rows ≤ j) and rows 0 … H − 1 the shifted ones
        self.vertical = nn.Conv2d(c_in, 2 * channels, (p + 1, kernel), padding=(p + 1, p))
        self.horizontal = nn.Conv2d(c_in, 2 * channels, (1, p + 1), padding=(0, p + first))
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def vertical_pass(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """v (N, c_in, R, W), rows 0 … R − 1 -> (the next layer's v (N, C, R, W), the link
        (N, 2C, R, W): row r holds what rows < r give row r's horizontal stack)."""
        rows = v.shape[2]
        pre = self.vertical(v)  # (N, 2C, R + p + 2, W); row j: input rows j − p − 1 … j − 1
        return _gate(pre[:, :, 1 : rows + 1]), self.link(pre[:, :, :rows])

    def horizontal_pass(self, h: Tensor, link: Tensor, cond: Tensor) -> Tensor:
        """h (N, c_in, R, W'), link (N / n, 2C, R, W') and cond (N, 2C, R, W') -> (N, C, R, W');
        column c reads h's columns ≤ c (< c in the first layer). The link is shared by the n
        draws of z of each image (N = n·B, draw-major)."""
        pre = self.horizontal(h)[..., : h.shape[3]]  # (N, 2C, R, W')
        pre = (
            pre + link
            if link.shape[0] == pre.shape[0]
            else (pre.unflatten(0, (-1, link.shape[0])) + link).flatten(0, 1)
        )
        pre = pre + cond
        out = self.out(_gate(pre))
        return out if self.first else h + out


class PixelCNNDecoder(Decoder):
    """Autoregressive decoder: a gated PixelCNN conditioned on z, p(x|z) = Π_i p(x_i | x_<i, z).

    A gated PixelCNN (van den Oord et al. 2016b) over the pixels in raster order, conditioned on
    z as in PixelVAE (Gulrajani et al. 2016): a ``ConvDecoder`` maps z to a feature map at image
    resolution, and a 1×1 convolution of that map enters the gates of every layer's horizontal
    stack. ``forward(z, x)`` returns, in one pass, every pixel's likelihood parameter given z and
    the pixels of x before it (teacher forcing): log p(x|z) for training and the IW bound costs
    one pass like any decoder. Drawing an image (``generate``) takes one pass per pixel; each
    covers only the rows and columns within the receptive field.

    The channels of one pixel are independent given z and the pixels before it. ``layers``
    sets the receptive field: the first layer's mask-A kernel reaches ``first_kernel // 2``
    pixels (plus one above), each further layer ``kernel // 2`` more; the more of the image the
    decoder sees, the less it needs z, and the likelier posterior collapse is (docs/zoo.md).

    Args:
        image_shape: (C, H, W) with H = W in {28, 32, 64}, passed in by the model.
        latent_dim: D, passed in by the model.
        layers: gated layers, ≥ 1: the first with mask A, the rest with mask B.
        channels: feature channels of each stack.
        kernel: side of the mask-B kernels (odd).
        first_kernel: side of the first layer's mask-A kernel (odd).
        cond_channels: channels of the z map.
        cond_net: channels of the ``ConvDecoder`` that draws the z map (encoder order).
        cond_hidden: width of that net's linear layer.
    """

    autoregressive = True
    #: images per decoder pass of the IW bound (``evaluation.metrics``): its many full-resolution
    #: feature maps run faster in chunks that stay in the CPU's caches (docs/benchmarks.md)
    iw_max_batch = 256

    def __init__(
        self,
        image_shape: Shape,
        latent_dim: int,
        layers: int = 5,
        channels: int = 16,
        kernel: int = 3,
        first_kernel: int = 7,
        cond_channels: int = 16,
        cond_net: Sequence[int] = (32, 64),
        cond_hidden: int = 256,
    ) -> None:
        super().__init__()
        c, h, _ = _check_conv_shape("PixelCNNDecoder", image_shape)
        if layers < 1 or channels < 1 or cond_channels < 1:
            raise UserError(
                f"PixelCNNDecoder needs layers, channels and cond_channels >= 1; got {layers}, {channels}, "
                f"{cond_channels}."
            )
        if kernel < 1 or first_kernel < 1 or not kernel % 2 or not first_kernel % 2:
            raise UserError(f"PixelCNNDecoder needs odd kernel and first_kernel; got {kernel}, {first_kernel}.")
        self.image_shape = (c, h, h)
        self.condition = ConvDecoder((cond_channels, h, h), latent_dim, cond_net, cond_hidden)
        self.cond_mix = nn.Conv2d(cond_channels, layers * 2 * channels, 1)
        self.layers = nn.ModuleList(
            GatedLayer(c if i == 0 else channels, channels, first_kernel if i == 0 else kernel, first=i == 0)
            for i in range(layers)
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, c, 1))
        # how far back the output at a pixel reads: rows above (through the vertical stacks and
        # the one-row shift) and columns to the left in its own row (through the horizontal ones)
        reach = first_kernel // 2 + (layers - 1) * (kernel // 2)
        self.rows_back, self.cols_back = reach + 1, reach + 1

    def conditions(self, z: Tensor) -> tuple[Tensor, ...]:
        """The z map's term in each layer's gates: ``layers`` tensors (N, 2C, H, W)."""
        return self.cond_mix(torch.relu(self.condition(z))).chunk(len(self.layers), 1)

    def context(self, x: Tensor) -> list[Tensor]:
        """The vertical stacks' links of images x (B, C, R, W): one (B, 2C, R, W) per layer."""
        links, v = [], x
        for layer in self.layers:
            v, link = layer.vertical_pass(v)
            links.append(link)
        return links

    def _horizontal(self, h: Tensor, links: list[Tensor], conds: Sequence[Tensor]) -> Tensor:
        for layer, link, cond in zip(self.layers, links, conds):
            h = layer.horizontal_pass(h, link, cond)
        return self.head(h)

    def forward(self, z: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        """z (N, D) and images x (B, C, H, W), N = n·B (draw j of image b at row j·B + b) ->
        the likelihood's parameter (N, C, H, W): pixel i's from z and x's pixels before i."""
        if z.shape[0] % x.shape[0]:
            raise ValueError(f"PixelCNNDecoder got {z.shape[0]} latents for {x.shape[0]} images; need n per image.")
        x = x.to(z.dtype)
        n = z.shape[0] // x.shape[0]
        h = x if n == 1 else x.repeat(n, 1, 1, 1)
        return self._horizontal(h, self.context(x), self.conditions(z))

    @torch.no_grad()
    def generate(
        self,
        z: Tensor,
        choose: Callable[[Tensor, int, int], Tensor],
        on_row: Callable[[int], None] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw x ~ p(x|z) pixel by pixel in raster order for latents z (N, D).

        ``choose(out, r, c)`` turns pixel (r, c)'s likelihood parameter out (N, C, 1, 1) into its
        values (N, C, 1, 1); ``on_row(r)`` is called after each row. Returns the images x
        (N, C, H, W) and every pixel's parameter when it was drawn (N, C, H, W): exactly
        ``forward(z, x)``, which sees the same pixels before each pixel."""
        c, height, width = self.image_shape
        conds = self.conditions(z)
        x = torch.zeros(z.shape[0], c, height, width, dtype=z.dtype, device=z.device)
        params = torch.zeros_like(x)
        for r in range(height):
            top = max(0, r - self.rows_back)  # rows above the receptive field change nothing
            links = [link[:, :, -1:] for link in self.context(x[:, :, top : r + 1])]  # row r's, (N, 2C, 1, W)
            for col in range(width):
                left = max(0, col - self.cols_back)
                cols = slice(left, col + 1)
                cond = [k[:, :, r : r + 1, cols] for k in conds]
                out = self._horizontal(x[:, :, r : r + 1, cols], [k[..., cols] for k in links], cond)[..., -1:]
                params[:, :, r : r + 1, col : col + 1] = out
                x[:, :, r : r + 1, col : col + 1] = choose(out, r, col)
            if on_row is not None:
                on_row(r)
        return x, params
