"""Streaming throughput (issue 13, item 6): ``StreamingDataModule`` against ``ImageFolderDataModule``
at 64×64 RGB and the same ``num_workers``, the CelebA config's model consumption on this machine,
and the streaming loader's peak RSS over one epoch of 10k and of 100k images.

    python -m bench.streaming --workdir /tmp/bench-stream --images 3000 --num-workers 2 --out stream.json

- Source: ``--images`` JPEGs of 178×218 (CelebA's aligned size) of smooth random colour fields,
  in one folder; ``vae data prepare`` turns them into 64×64 chunks (center crop 148, resize).
- Loaders: images/s over ``--seconds`` (whole batches of 128, over epochs if needed), no model.
- Model: images/s of ``vae fit`` with ``configs/celeba/vae.yaml`` fed by the streaming module,
  timed by ``bench.throughput.Throughput`` after a warm-up.
- RSS: a fresh process iterates one epoch of synthetic prepared chunks of each size; peak RSS of
  the process plus its loader workers, sampled at every batch. ``--model-steps 0`` skips the model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def write_jpegs(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(len(list(folder.glob("*.jpg"))), n):
        small = rng.integers(0, 256, (14, 11, 3), dtype=np.uint8)  # upsampled: JPEG-like content, not noise
        Image.fromarray(small).resize((178, 218), Image.BILINEAR).save(folder / f"{i:06d}.jpg", quality=90)


def _family(pid: int) -> list[int]:
    """``pid`` and its descendants (loader workers), from /proc."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid] + [q for c in children for q in _family(int(c))]


def family_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process and its live workers."""
    total = 0
    for pid in _family(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def family_rss_mb() -> float:
    """Resident memory of this process plus its workers now, in MB."""
    total = 0
    for pid in _family(os.getpid()):
        try:
            line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS"))
            total += int(line.split()[1])
        except (OSError, StopIteration):
            pass
    return total / 1024


def rate(loader, seconds: float) -> tuple[float, float]:
    """Images/s and images per CPU-second (process + workers: on a shared machine the fairer
    number) of ``loader`` over at least ``seconds`` (and at least 5 batches)."""
    n = batches = 0
    t0, c0 = time.perf_counter(), family_cpu_s()
    while True:
        for x, _ in loader:
            n, batches = n + len(x), batches + 1
            if batches >= 5 and time.perf_counter() - t0 >= seconds:
                return n / (time.perf_counter() - t0), n / max(family_cpu_s() - c0, 1e-9)


def model_rate(dst: Path, workdir: Path, warmup: int, steps: int, num_workers: int) -> dict:
    from bench.throughput import Throughput
    from vae_lightning.cli.lightning import VAECLI

    out = workdir / "model.json"
    cli = VAECLI(
        [
            "--config",
            str(REPO / "configs/base.yaml"),
            "--config",
            str(REPO / "configs/celeba/vae.yaml"),
            "--data",
            "vae_lightning.data.StreamingDataModule",
            "--data.init_args.data_dir",
            str(dst),
            "--data.init_args.num_workers",
            str(num_workers),
            "--trainer.default_root_dir",
            str(workdir / "run"),
            "--trainer.max_steps",
            str(warmup + steps),
            "--trainer.logger",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.limit_val_batches",
            "0",
            "--trainer.accelerator",
            "cpu",
            "--images.every_n_val",
            "0",
            "--checkpoint.monitor",
            "null",
        ],
        run=False,
    )
    cli.trainer.callbacks.append(Throughput(str(out), warmup=warmup, steps=steps))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return json.loads(out.read_text())


def synthetic_prepared(dst: Path, n: int, num_workers: int) -> Path:
    """A prepared folder of n random 64×64 RGB images (train) and 128 (val), as vae data prepare writes."""
    from vae_lightning.cli.prepare import _litdata_version, _optimize
    from vae_lightning.data.format import FORMAT, FORMAT_VERSION, META

    if (dst / META).exists():
        return dst
    for name, count in (("train", n), ("val", 128)):
        _optimize(Random(count), list(range(0, count, 1000)), dst / name, num_workers, "64MB")
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "litdata": _litdata_version(),
        "image_shape": [3, 64, 64],
        "target": "label",
        "target_names": None,
        "splits": {"train": n, "val": 128},
    }
    (dst / META).write_text(json.dumps(meta))
    return dst


class Random:
    """Input s: images s … s + 999 (fewer at the end) of random uint8 (3, 64, 64)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, start: int):
        rng = np.random.default_rng(start)
        for _ in range(start, min(start + 1000, self.n)):
            yield {"image": rng.integers(0, 256, (3, 64, 64), dtype=np.uint8), "target": 0}


def rss_epoch(dst: str, num_workers: int) -> dict:
    """Run in a fresh process: one epoch of the streaming train loader; the peak of (this process
    + its workers) resident memory, sampled every batch, in MB. (Not ru_maxrss: Linux carries it
    over exec from the parent.)"""
    from vae_lightning.data import StreamingDataModule

    loader = StreamingDataModule(dst, batch_size=128, num_workers=num_workers).train_dataloader()
    images, peak = 0, family_rss_mb()
    for x, _ in loader:
        images += len(x)
        peak = max(peak, family_rss_mb())
    return {"images": images, "peak_rss_mb": peak}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--model-steps", type=int, default=20)
    p.add_argument("--rss-sizes", default="10000,100000")
    p.add_argument("--rss-epoch", default=None, help=argparse.SUPPRESS)  # the fresh process of one RSS run
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if a.rss_epoch:
        Path(a.out).write_text(json.dumps(rss_epoch(a.rss_epoch, a.num_workers)))
        return
    from vae_lightning.cli.prepare import prepare
    from vae_lightning.data import ImageFolderDataModule, StreamingDataModule

    work = Path(a.workdir)
    jpegs, dst = work / "jpegs", work / f"stream-{a.images}"
    write_jpegs(jpegs, a.images)
    if not dst.exists():
        prepare(str(jpegs), str(dst), image_size=64, crop=148, val_size=0.05, num_workers=a.num_workers)
    folder = ImageFolderDataModule(str(jpegs), image_size=64, batch_size=128, val_size=0.05, num_workers=a.num_workers)
    folder.setup("fit")
    result = {"images": a.images, "num_workers": a.num_workers, "batch_size": 128}
    streaming = StreamingDataModule(str(dst), batch_size=128, num_workers=a.num_workers)
    for name, module in (("image_folder", folder), ("streaming", streaming)):
        loader = module.train_dataloader()  # built here, dropped after: one loader's workers at a time
        result[f"{name}_images_per_s"], result[f"{name}_images_per_cpu_s"] = rate(loader, a.seconds)
        del loader
    result["speedup"] = result["streaming_images_per_s"] / result["image_folder_images_per_s"]
    result["speedup_per_cpu_s"] = result["streaming_images_per_cpu_s"] / result["image_folder_images_per_cpu_s"]
    if a.model_steps:
        model = model_rate(dst, work, warmup=5, steps=a.model_steps, num_workers=a.num_workers)
        result["celeba_model_images_per_s"] = model["images_per_s"]
        result["celeba_model_images_per_cpu_s"] = model["images_per_cpu_s"]
        result["streaming_over_model"] = result["streaming_images_per_s"] / model["images_per_s"]
    result["rss"] = {}
    for n in (int(s) for s in a.rss_sizes.split(",")):
        prepared = synthetic_prepared(work / f"synthetic-{n}", n, a.num_workers)
        out = work / f"rss-{n}.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.streaming",
                "--workdir",
                str(work),
                "--rss-epoch",
                str(prepared),
                "--num-workers",
                str(a.num_workers),
                "--out",
                str(out),
            ],
            check=True,
            cwd=REPO,
        )
        result["rss"][n] = json.loads(out.read_text())
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
