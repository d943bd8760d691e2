"""``vae sample``, ``vae traverse`` and ``vae interpolate``: pictures from a trained checkpoint.

    vae sample runs/sprites-vae/checkpoints/last.ckpt --num 64 --out samples.png
    vae sample runs/sprites-vae/checkpoints/last.ckpt --num 10000 --out generated/   (a data set)
    vae traverse runs/sprites-vae/checkpoints/last.ckpt --out traversals.png
    vae interpolate runs/sprites-vae/checkpoints/last.ckpt --images a.png b.png --out interp.png

They need no config: the model comes from the checkpoint. Outputs are PNG grids, written
only when complete; ``vae sample`` also writes data sets (``vae_lightning.cli.generate``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
from pathlib import Path

from vae_lightning.cli.arguments import Parser
from vae_lightning.cli.console import hyphenated
from vae_lightning.errors import UserError

DOC = {
    "sample": "decode N draws z ~ p(z), the prior (N(0, T^2 I) for the standard normal): a PNG grid "
    "(--out x.png), a folder of N PNGs (--out DIR) or an array file (--out x.npz)",
    "traverse": "latent traversals: one row per dimension, set from -3 to +3, most influential first "
    "(--group: of one group of a hierarchical model)",
    "interpolate": "decode straight lines in latent space between pairs of images (or of prior draws)",
}


def _parser(name: str) -> argparse.ArgumentParser:
    p = Parser(prog=f"vae {name}", description=DOC[name])
    p.add_argument("checkpoint", help="a .ckpt file written by `vae fit`")
    out = "output: .png grid, a new folder of PNGs or an .npz file" if name == "sample" else "output PNG file"
    p.add_argument("--out", default=f"{name}.png", help=f"{out} (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent draws (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: %(default)s)")
    if name == "sample":
        p.add_argument("--num", type=int, default=64, help="number of samples (default: %(default)s)")
        p.add_argument("--nrow", type=int, default=8, help="images per row of a grid (default: %(default)s)")
        p.add_argument(
            "--format",
            choices=FORMATS,
            help="grid (one PNG), png (a folder of N PNGs) or npz; default: from the --out extension",
        )
        p.add_argument("--temperature", type=float, default=1.0, help="z ~ N(0, T^2 I) (default: %(default)s)")
        kind = p.add_mutually_exclusive_group()
        kind.add_argument(
            "--mean",
            dest="draw",
            action="store_false",
            help="images are E[x|z] (the default; an autoregressive decoder: each pixel's probability along one draw)",
        )
        kind.add_argument(
            "--draw",
            dest="draw",
            action="store_true",
            help="images are draws from p(x|z): binary for a Bernoulli model",
        )
        p.add_argument("--batch-size", type=int, default=256, help="images decoded at once (default: %(default)s)")
        p.set_defaults(draw=False)  # else --mean's store_false default (True) would win
    if name == "traverse":
        p.add_argument(
            "--image",
            help="traverse around the code μ(x) of this image file; default: around z = 0 (the standard-normal "
            "prior) or a --seed draw from a learned prior",
        )
        p.add_argument(
            "--dims", type=int, default=10, help="dimensions shown, most influential first (default: %(default)s)"
        )
        p.add_argument(
            "--group",
            type=int,
            help="only dimensions of this group of latents (a hierarchical model's; 0: the top); default: any",
        )
        p.add_argument("--steps", type=int, default=7, help="values per row from -span to +span (default: %(default)s)")
        p.add_argument(
            "--span", type=float, default=3.0, help="largest |z_u|, in prior std units (default: %(default)s)"
        )
    if name == "interpolate":
        p.add_argument("--images", nargs="+", help="image files, taken in pairs; default: pairs of prior draws")
        p.add_argument(
            "--rows", type=int, default=4, help="pairs of prior draws when no --images (default: %(default)s)"
        )
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


def _influence_order(model, z, span: float, columns: slice | None = None):
    """Dimensions (of ``columns``, default all) sorted by how much decoding changes when only z_u
    moves from −span to +span (no data at hand, so the decoder's own sensitivity stands in for
    activity)."""
    import torch

    dims = torch.arange(len(z))[columns or slice(None)]
    ends = z.repeat(2 * len(dims), 1)
    for i, u in enumerate(dims.tolist()):
        ends[2 * i, u], ends[2 * i + 1, u] = -span, span
    images = model.decode(ends).cpu().flatten(1)
    change = (images[0::2] - images[1::2]).abs().mean(1)
    return dims[torch.argsort(change, descending=True, stable=True)]


def _centre(model, generator):
    """Where a traversal without --image starts: z = 0, the mode of the standard-normal prior;
    under a learned prior a seeded draw from it, since z = 0 can lie where no component is and
    decode to a blank image."""
    import torch

    from vae_lightning.priors import StandardNormal

    if isinstance(model.prior, StandardNormal):
        return torch.zeros(model.latent_dim)
    return model.prior.sample(1, generator=generator)[0].float().cpu()


FORMATS = ("grid", "png", "npz")
MAX_GRID = 4096  # images in one PNG grid, decoded at once
#: the extension each format's --out must have ("": a folder)
SUFFIX = {"grid": ".png", "png": "", "npz": ".npz"}


def sample_format(args: argparse.Namespace) -> str:
    """The output format of ``vae sample``: --format, else the one the --out extension names;
    refuses a --format the extension contradicts."""
    suffix = Path(args.out).suffix.lower()
    fmt = args.format or next((f for f, s in SUFFIX.items() if s == suffix), None)
    if fmt is None or SUFFIX[fmt] != suffix:
        want = f"end in {SUFFIX[fmt]}" if fmt and SUFFIX[fmt] else "name a folder (no extension)"
        given = f"--format {fmt} needs --out to {want}" if fmt else "--out must end in .png or .npz or name a folder"
        raise UserError(f"{given}; got {args.out!r}.")
    return fmt


def _check_sample(args: argparse.Namespace) -> str:
    from vae_lightning.runtime.outputs import check_output

    if args.num < 1 or args.nrow < 1 or args.batch_size < 1:
        got = f"{args.num}, {args.nrow} and {args.batch_size}"
        raise UserError(f"--num, --nrow and --batch-size must be >= 1, got {got}.")
    if not 0 < args.temperature < math.inf:  # inf decodes NaN: blank images
        raise UserError(f"--temperature must be a finite number > 0, got {args.temperature}.")
    fmt = sample_format(args)
    if fmt == "grid" and args.num > MAX_GRID:
        raise UserError(
            f"--num {args.num} is too many for one PNG grid (at most {MAX_GRID}); write them as a folder "
            "(--out DIR) or an .npz file."
        )
    check_output("--out", args.out, "dir" if fmt == "png" else "file", empty=fmt == "png")
    return fmt


def _check_pictures(name: str, args: argparse.Namespace) -> None:
    """The numbers of ``vae traverse`` and ``vae interpolate``, before the checkpoint is read."""
    if name == "traverse" and (args.dims < 1 or args.steps < 2 or not 0 < args.span < math.inf):
        raise UserError(
            f"need --dims >= 1, --steps >= 2 and a finite --span > 0; got {args.dims}, {args.steps}, {args.span}."
        )
    if name == "interpolate":
        if args.steps < 2:
            raise UserError(f"--steps must be >= 2, got {args.steps}.")
        if args.images and len(args.images) % 2:
            raise UserError(f"--images takes pairs of files, got {len(args.images)}.")
        if not args.images and args.rows < 1:
            raise UserError(f"--rows must be >= 1, got {args.rows}.")
    rows = args.dims if name == "traverse" else len(args.images) // 2 if args.images else args.rows
    if rows * args.steps > MAX_GRID:
        what = "--dims" if name == "traverse" else "--rows (or --images)"
        raise UserError(
            f"{what} x --steps is {rows} x {args.steps} images, more than one PNG grid holds (at most "
            f"{MAX_GRID}); lower them."
        )


def _sample(model, args: argparse.Namespace, fmt: str):
    from vae_lightning.cli import generate
    from vae_lightning.evaluation import pictures
    from vae_lightning.runtime.outputs import progress

    out = Path(args.out).expanduser()
    if fmt == "png":
        return generate.write_pngs(model, out, args.num, args.seed, args.temperature, args.draw, args.batch_size)
    if fmt == "npz":
        return generate.write_npz(model, out, args.num, args.seed, args.temperature, args.draw, args.batch_size)
    if getattr(model.decoder, "autoregressive", False):  # pixel by pixel: minutes, worth a bar
        with progress(args.num, "vae sample", "img") as bar:
            on_row = generate.row_progress(model, args.num, bar)
            grid = pictures.sample_grid(model, args.num, args.nrow, args.seed, args.temperature, args.draw, on_row)
    else:
        grid = pictures.sample_grid(model, args.num, args.nrow, args.seed, args.temperature, args.draw)
    return pictures.save_png(grid, out)


def _run(name: str, args: argparse.Namespace) -> Path:
    from vae_lightning.cli import preflight
    from vae_lightning.evaluation import pictures
    from vae_lightning.runtime.checkpoint import load_model
    from vae_lightning.runtime.fallback import write_or_keep
    from vae_lightning.runtime.outputs import check_output

    preflight.check_device("--device", args.device)
    preflight.check_seed("--seed", args.seed)
    if name == "sample":
        fmt = _check_sample(args)
        model = load_model(args.checkpoint, map_location=args.device)
        if fmt == "npz":
            check_space(Path(args.out).expanduser(), args.num * (math.prod(model.image_shape) + 4 * model.latent_dim))
        with enough_memory():
            return _sample(model, args, fmt)
    _check_pictures(name, args)
    check_output("--out", args.out, "file", (".png",))
    model = load_model(args.checkpoint, map_location=args.device)
    with enough_memory():
        grid = _picture(name, model, args)
    # a failed write keeps the grid beside the checkpoint
    return write_or_keep(lambda path: pictures.save_png(grid, path), args.out, "--out", Path(args.checkpoint).parent)


def _picture(name: str, model, args: argparse.Namespace):
    import torch

    from vae_lightning.evaluation import pictures

    g = torch.Generator().manual_seed(args.seed)
    if name == "traverse":
        from vae_lightning.cli.encode import check_group

        columns = check_group(model, args.group)
        z = pictures.encode_mean(model, read_image(args.image, model))[0].cpu() if args.image else _centre(model, g)
        dims = _influence_order(model, z, args.span, columns)[: args.dims]
        grid = pictures.traversal_grid(model, z, dims, args.steps, args.span)
    else:
        if args.images:
            x = torch.cat([read_image(p, model) for p in args.images])
            mu = pictures.encode_mean(model, x).cpu()
            grid = pictures.interpolation_grid(model, mu[0::2], mu[1::2], args.steps, x[0::2], x[1::2])
        else:
            z = model.prior.sample(2 * args.rows, generator=g)
            grid = pictures.interpolation_grid(model, z[0::2], z[1::2], args.steps)
    return grid


def check_space(out: Path, size: int) -> None:
    """Refuse an output of ``size`` bytes that the disk under ``out`` cannot hold."""
    import shutil

    free = shutil.disk_usage(out.parent if out.parent.exists() else Path.cwd()).free
    if size > free:
        raise UserError(
            f"--out {str(out)!r} would take {size / 1e9:.3g} GB but its disk has {free / 1e9:.3g} GB free; "
            "lower --num or write elsewhere."
        )


@contextlib.contextmanager
def enough_memory():
    """A memory allocation that fails (too large --num, --batch-size or --steps) is the user's line."""
    import torch

    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError, MemoryError) as err:
        if not isinstance(err, (torch.OutOfMemoryError, MemoryError)) and "alloc" not in str(err):
            raise
        raise UserError(
            "not enough memory for these images; lower --batch-size (vae sample), --num, --steps or --dims."
        ) from None


def main(argv: list[str]) -> None:
    """``argv``: the command name followed by its arguments."""
    name, rest = argv[0], argv[1:]
    args = _parser(name).parse_args(hyphenated(rest))
    path = _run(name, args)
    print(f"vae: wrote {path}")
