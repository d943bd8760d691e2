"""One-shot GPU benchmark: the 64×64 sprites conv VAE of ``configs/sprites/vae.yaml`` with the data
on the device, through ``vae fit`` and through a bare model step (no Lightning), for every
batch size × precision × channels_last × compile; then the ELBO after 500 steps in each precision.
Prints one table and appends it to ``--doc`` (default ``docs/benchmarks.md`` on a GPU).

    python -m bench.gpu              # on a machine with a CUDA GPU
    python -m bench.gpu --dry-run    # the same code on the CPU at tiny sizes (tests/test_bench_gpu.py)

``vae fit`` runs in this process through ``vae_lightning.cli.run`` with the shipped configs
(progress display, NaN/Inf guard, RNG state, checkpoint at the end) and ``trainer.logger: false``;
images/s are timed by ``bench.throughput.Throughput`` over the steps after the warm-up. The
bare step is ``forward → objective → backward → Adam.step`` under ``torch.autocast`` (and a
``GradScaler`` for 16-mixed), what Lightning's precision plugins do, on images rendered on the
device as ``SpritesDataModule(on_device=true)`` does.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
import yaml

from bench import workloads as w
from bench.run import fit_yaml

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
SPRITES = w.REPO / "configs" / "sprites" / "vae.yaml"
MODEL = w.REPO / "configs" / "model" / "conv64.yaml"  # the model block configs/sprites/vae.yaml names
ELBO_TOLERANCE = 0.5  # nats: the precisions must agree within this after the same steps


def sizes(dry_run: bool) -> dict:
    """Batch sizes, run lengths and data sizes: the real ones, or tiny for the CPU dry run."""
    if dry_run:
        # no 16-mixed: `vae` refuses it on a CPU (Lightning would silently run bf16 instead)
        return dict(
            batches=(8,),
            warmup=2,
            steps=3,
            elbo_steps=5,
            eval_images=32,
            num_images=2000,
            compile=(False,),
            precisions=PRECISIONS[:2],
        )
    return dict(
        batches=(256, 1024),
        warmup=30,
        steps=150,
        elbo_steps=500,
        eval_images=4096,
        num_images=None,
        compile=(False, True),
        precisions=PRECISIONS,
    )


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a Lightning precision."""
    return {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}[precision]


def build_model(device: torch.device, compile: bool | str, channels_last: bool):
    """The model of configs/sprites/vae.yaml (configs/model/conv64.yaml), built without the CLI;
    returns (model, optimizer)."""
    from vae_lightning import VAE, ConvDecoder, ConvEncoder

    init = yaml.safe_load(MODEL.read_text())["init_args"]
    enc, dec = init["encoder"]["init_args"], init["decoder"]["init_args"]
    model = VAE(
        encoder=partial(ConvEncoder, **enc),
        decoder=partial(ConvDecoder, **dec),
        latent_dim=init["latent_dim"],
        image_shape=(1, 64, 64),
        compile=compile,
        channels_last=channels_last,
    ).to(device)
    return model, torch.optim.Adam(model.parameters(), **init["optimizer"]["init_args"])


def sprites_batch(source, batch: int, generator: torch.Generator):
    from vae_lightning.data.sprites import NUM_IMAGES

    idx = torch.randint(0, NUM_IMAGES, (batch,), generator=generator, device=generator.device)
    return source[idx][0]


def bare_train(device, precision: str, batch: int, steps: int, compile=False, channels_last=False, warmup=0):
    """``warmup + steps`` bare steps; returns (model, images/s over the last ``steps``)."""
    from vae_lightning.data.sprites import SpritesSource

    torch.manual_seed(0)
    model, opt = build_model(device, compile, channels_last)
    source, g = SpritesSource(device), torch.Generator(device).manual_seed(0)
    dtype = autocast_dtype(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    t0 = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            t0 = time.perf_counter()
        x = sprites_batch(source, batch, g)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model.objective(model(x), step, None).loss
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    sync(device)
    return model, batch * steps / (time.perf_counter() - t0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fit_rate(
    work: Path, tag: str, s: dict, precision: str, batch: int, compile: bool | str, channels_last: bool
) -> float:
    """Images/s of `vae fit` (shipped sprites configs, data on the device) for one setting."""
    from vae_lightning.cli import run

    out = work / f"{tag}.json"
    data = "data:\n  init_args: {on_device: true, val_size: 64%s}\n" % (
        f", num_images: {s['num_images']}" if s["num_images"] else ""
    )
    cfg = fit_yaml(work / f"{tag}.yaml", out, s["warmup"], s["steps"], data)
    run(
        [
            "fit",
            "--config",
            str(w.REPO / "configs" / "base.yaml"),
            "--config",
            str(SPRITES),
            "--config",
            str(cfg),
            "--trainer.logger",
            "false",
            "--trainer.precision",
            precision,
            "--trainer.default_root_dir",
            str(work / tag),
            "--data.init_args.batch_size",
            str(batch),
            "--model.init_args.compile",
            str(compile).lower(),
            "--model.init_args.channels_last",
            str(channels_last).lower(),
            "--images.every_n_val",
            "0",
            "--trainer.enable_model_summary",
            "false",
        ]
    )
    return json.loads(out.read_text())["images_per_s"]


@torch.no_grad()
def elbo(model, device, n: int) -> float:
    """ELBO in nats per image (float32, one z per image) on ``n`` fixed sprites."""
    from vae_lightning.data.sprites import SpritesSource

    source, g = SpritesSource(device), torch.Generator(device).manual_seed(12345)
    torch.manual_seed(1)
    x = sprites_batch(source, n, g)
    values = [(-(f.recon + f.kl)).sum().item() for f in map(model, x.split(256))]
    return sum(values) / n


def measure(work: Path, device, s: dict, batch: int, precision: str, compile: bool | str, cl: bool) -> dict:
    """One row: images/s of `vae fit` and of the bare step for one setting, and their ratio."""
    tag = f"b{batch}-{precision}-cl{int(cl)}-{compile if isinstance(compile, str) else f'c{int(compile)}'}"
    fit = fit_rate(work, tag, s, precision, batch, compile, cl)
    _, bare = bare_train(device, precision, batch, s["steps"], compile, cl, s["warmup"])
    print(f"{tag}: fit {fit:.0f} img/s, bare {bare:.0f} img/s, fit/bare {fit / bare:.3f}", flush=True)
    row = dict(batch=batch, precision=precision, channels_last=cl, compile=compile, fit=fit, bare=bare)
    return row | {"ratio": fit / bare}


def throughput_rows(work: Path, device, s: dict) -> list[dict]:
    return [
        measure(work, device, s, batch, precision, compile, cl)
        for batch in s["batches"]
        for precision in s["precisions"]
        for compile in s["compile"]
        for cl in (False, True)
    ]


def compile_name(value: bool | str) -> str:
    return value if isinstance(value, str) else ("on" if value else "off")


def mode_rows(work: Path, device, s: dict) -> list[dict]:
    """torch.compile's modes (``model.init_args.compile: <mode>``) at the first batch size,
    bf16-mixed, channels_last on: the options for the GPU path (``--compile-modes``)."""
    modes = ("default", "reduce-overhead", "max-autotune")
    return [measure(work, device, s, s["batches"][0], "bf16-mixed", mode, True) for mode in modes]


def table(rows: list[dict], elbos: dict[str, float], head: str) -> str:
    columns = "| batch | precision | channels_last | compile | `vae fit` img/s | bare step img/s | fit / bare |"
    lines = [head, "", columns, "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r['batch']} | {r['precision']} | {'on' if r['channels_last'] else 'off'} | "
        f"{compile_name(r['compile'])} | {r['fit']:.0f} | {r['bare']:.0f} | {r['ratio']:.3f} |"
        for r in rows
    ]
    ratios = [r["ratio"] for r in rows]
    spread = max(elbos.values()) - min(elbos.values())
    lines += [
        "",
        f"`vae fit` / bare step: median {statistics.median(ratios):.3f} "
        f"[{min(ratios):.3f} – {max(ratios):.3f}] "
        f"(goal ≥ 0.80 in every row: {'met' if min(ratios) >= 0.80 else 'not met'})",
        "ELBO after the same steps, nats: "
        + ", ".join(f"{p} {v:.2f}" for p, v in elbos.items())
        + f"; spread {spread:.2f} (must be ≤ {ELBO_TOLERANCE}: {'met' if spread <= ELBO_TOLERANCE else 'NOT met'})",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="on the CPU at tiny sizes: checks the code, measures nothing")
    p.add_argument("--doc", help="markdown file to append the table to (default: docs/benchmarks.md, not in a dry run)")
    p.add_argument("--out", help="also write the rows as JSON here")
    p.add_argument(
        "--compile-modes",
        action="store_true",
        help="also torch.compile's default, reduce-overhead and max-autotune modes (batch 256, bf16-mixed, "
        "channels_last; several minutes of compilation beyond the 4-minute table)",
    )
    a = p.parse_args(argv)
    if not a.dry_run and not torch.cuda.is_available():
        raise SystemExit("bench.gpu: no CUDA GPU here; use --dry-run to check the code on the CPU.")
    device, s = torch.device("cpu" if a.dry_run else "cuda"), sizes(a.dry_run)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="vae-bench-gpu-"))
    rows = throughput_rows(work, device, s)
    elbos = {}
    for precision in s["precisions"]:
        model, _ = bare_train(device, precision, s["batches"][0], s["elbo_steps"])
        elbos[precision] = elbo(model.eval(), device, s["eval_images"])
    name = "CPU dry run (tiny sizes: checks the code, measures nothing)" if a.dry_run else torch.cuda.get_device_name()
    head = (
        f"### `python -m bench.gpu`, {datetime.date.today()}, {name}, torch {torch.__version__}\n\n"
        f"{s['warmup']} warm-up + {s['steps']} timed steps per row; ELBO after {s['elbo_steps']} bare steps at "
        f"batch {s['batches'][0]} on {s['eval_images']} fixed sprites; "
        f"{time.perf_counter() - started:.0f} s in all."
    )
    text = table(rows, elbos, head)
    if a.compile_modes:
        modes = mode_rows(work, device, s)
        text += "\ntorch.compile modes (`model.init_args.compile: <mode>`):\n\n" + "\n".join(
            f"- {r['compile']}: `vae fit` {r['fit']:.0f} img/s, bare step {r['bare']:.0f} img/s, "
            f"fit / bare {r['ratio']:.3f}"
            for r in modes
        )
        text += "\n"
        rows += modes
    print("\n" + text)
    doc = a.doc or (None if a.dry_run else str(w.REPO / "docs" / "benchmarks.md"))
    if doc:
        with open(doc, "a") as f:
            f.write("\n" + text)
    if a.out:
        Path(a.out).write_text(json.dumps({"rows": rows, "elbo": elbos}, indent=1))


if __name__ == "__main__":
    main()
