"""``vae sample``, ``vae traverse`` and ``vae interpolate``: pictures from a trained checkpoint.

    vae sample runs/sprites-vae/checkpoints/last.ckpt --num 64 --out samples.png
    vae traverse runs/sprites-vae/checkpoints/last.ckpt --out traversals.png
    vae interpolate runs/sprites-vae/checkpoints/last.ckpt --images a.png b.png --out interp.png

They need no config: the model comes from the checkpoint. Outputs are PNG grids, written
only when complete.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vae_lightning.errors import UserError

DOC = {
    "sample": "decode N draws z ~ N(0, I) into a PNG grid (the means E[x|z])",
    "traverse": "latent traversals: one row per dimension, set from -3 to +3, most influential first",
    "interpolate": "decode straight lines in latent space between pairs of images (or of prior draws)",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, like every other `vae` error
        raise UserError(f"{self.prog}: {message}")


def _parser(name: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"vae {name}", description=DOC[name])
    p.add_argument("checkpoint", help="a .ckpt file written by `vae fit`")
    p.add_argument("--out", default=f"{name}.png", help="output PNG file (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent draws (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: %(default)s)")
    if name == "sample":
        p.add_argument("--num", type=int, default=64, help="number of samples (default: %(default)s)")
        p.add_argument("--nrow", type=int, default=8, help="images per row (default: %(default)s)")
    if name == "traverse":
        p.add_argument("--image", help="traverse around the code μ(x) of this image file; default: around z = 0")
        p.add_argument("--dims", type=int, default=10, help="dimensions shown, most influential first (default: %(default)s)")
        p.add_argument("--steps", type=int, default=7, help="values per row from -span to +span (default: %(default)s)")
        p.add_argument("--span", type=float, default=3.0, help="largest |z_u|, in prior std units (default: %(default)s)")
    if name == "interpolate":
        p.add_argument("--images", nargs="+", help="image files, taken in pairs; default: pairs of prior draws")
        p.add_argument("--rows", type=int, default=4, help="pairs of prior draws when no --images (default: %(default)s)")
        p.add_argument("--steps", type=int, default=8, help="decoded images per row (default: %(default)s)")
    return p


def read_image(path: str, model):
    """An image file as the model's input (1, C, H, W) in [0, 1]: converted to its channels,
    resized to its size; binarized at 0.5 for a Bernoulli likelihood."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor, resize

    c, h, w = model.image_shape
    try:
        with Image.open(path) as im:
            image = im.convert("L" if c == 1 else "RGB")
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read image {path!r} ({type(err).__name__}); pass a PNG or JPEG file.") from None
    x = resize(pil_to_tensor(image), [h, w], antialias=True).float().div(255).unsqueeze(0)
    return (x > 0.5).float() if model.likelihood.discrete else x.clamp(0, 1)


def _influence_order(model, z, span: float):
    """Dimensions sorted by how much decoding changes when only z_u moves from −span to +span
    (no data at hand, so the decoder's own sensitivity stands in for activity)."""
    import torch

    ends = z.repeat(2 * len(z), 1)
    for u in range(len(z)):
        ends[2 * u, u], ends[2 * u + 1, u] = -span, span
    images = model.decode_mean(ends).cpu().flatten(1)
    change = (images[0::2] - images[1::2]).abs().mean(1)
    return torch.argsort(change, descending=True, stable=True)


def _run(name: str, args: argparse.Namespace) -> Path:
    import torch

    from vae_lightning.evaluation import pictures
    from vae_lightning.runtime.checkpoint import load_model

    if not str(args.out).lower().endswith(".png"):
        raise UserError(f"--out must be a .png file, got {args.out!r}.")
    model = load_model(args.checkpoint, map_location=args.device)
    g = torch.Generator().manual_seed(args.seed)
    if name == "sample":
        if args.num < 1 or args.nrow < 1:
            raise UserError(f"--num and --nrow must be >= 1, got {args.num} and {args.nrow}.")
        grid = pictures.sample_grid(model, args.num, args.nrow, args.seed)
    elif name == "traverse":
        if args.dims < 1 or args.steps < 2 or args.span <= 0:
            raise UserError(f"need --dims >= 1, --steps >= 2 and --span > 0; got {args.dims}, {args.steps}, {args.span}.")
        z = pictures.encode_mean(model, read_image(args.image, model))[0].cpu() if args.image else torch.zeros(model.latent_dim)
        dims = _influence_order(model, z, args.span)[: args.dims]
        grid = pictures.traversal_grid(model, z, dims, args.steps, args.span)
    else:
        if args.steps < 2:
            raise UserError(f"--steps must be >= 2, got {args.steps}.")
        if args.images:
            if len(args.images) % 2:
                raise UserError(f"--images takes pairs of files, got {len(args.images)}.")
            x = torch.cat([read_image(p, model) for p in args.images])
            mu = pictures.encode_mean(model, x).cpu()
            grid = pictures.interpolation_grid(model, mu[0::2], mu[1::2], args.steps, x[0::2], x[1::2])
        else:
            if args.rows < 1:
                raise UserError(f"--rows must be >= 1, got {args.rows}.")
            z = model.prior.sample(2 * args.rows, generator=g)
            grid = pictures.interpolation_grid(model, z[0::2], z[1::2], args.steps)
    return pictures.save_png(grid, args.out)


def main(argv: list[str]) -> None:
    """``argv``: the command name followed by its arguments."""
    name, rest = argv[0], argv[1:]
    args = _parser(name).parse_args(rest)
    path = _run(name, args)
    print(f"vae: wrote {path}")
