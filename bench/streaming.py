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
  the process and, separately, of its loader workers (``RUSAGE_CHILDREN``: the largest child).
"""

from __future__ import annotations

import argparse
import json
import resource
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


def rate(loader, seconds: float) -> float:
    """Images/s of ``loader`` over at least ``seconds`` (and at least 5 batches)."""
    n = batches = 0
    t0 = time.perf_counter()
    while True:
        for x, _ in loader:
            n, batches = n + len(x), batches + 1
            if batches >= 5 and time.perf_counter() - t0 >= seconds:
                return n / (time.perf_counter() - t0)


def model_rate(dst: Path, workdir: Path, warmup: int, steps: int, num_workers: int) -> dict:
    from vae_lightning.lightning_cli import VAECLI
    from bench.throughput import Throughput

    out = workdir / "model.json"
    cli = VAECLI(["--config", str(REPO / "configs/base.yaml"), "--config", str(REPO / "configs/celeba/vae.yaml"),
                  "--data", "vae_lightning.data.StreamingDataModule", "--data.init_args.data_dir", str(dst),
                  "--data.init_args.num_workers", str(num_workers), "--trainer.default_root_dir", str(workdir / "run"),
                  "--trainer.max_steps", str(warmup + steps), "--trainer.logger", "false",
                  "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0",
                  "--trainer.accelerator", "cpu", "--images.every_n_val", "0", "--checkpoint.monitor", "null"], run=False)
    cli.trainer.callbacks.append(Throughput(str(out), warmup=warmup, steps=steps))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return json.loads(out.read_text())


def synthetic_prepared(dst: Path, n: int, num_workers: int) -> Path:
    """A prepared folder of n random 64×64 RGB images (train) and 128 (val), as vae data prepare writes."""
    from vae_lightning.prepare import FORMAT, FORMAT_VERSION, META, _litdata_version, _optimize

    if (dst / META).exists():
        return dst
    for name, count in (("train", n), ("val", 128)):
        _optimize(Random(count), list(range(0, count, 1000)), dst / name, num_workers, "64MB")
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "litdata": _litdata_version(), "image_shape": [3, 64, 64],
            "target": "label", "target_names": None, "splits": {"train": n, "val": 128}}
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
    """Run in a fresh process: one epoch of the streaming train loader; peak RSS in MB."""
    from vae_lightning.data import StreamingDataModule

    loader = StreamingDataModule(dst, batch_size=128, num_workers=num_workers).train_dataloader()
    images = sum(len(x) for x, _ in loader)
    return {"images": images, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


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
    from vae_lightning.data import ImageFolderDataModule, StreamingDataModule
    from vae_lightning.prepare import prepare

    work = Path(a.workdir)
    jpegs, dst = work / "jpegs", work / f"stream-{a.images}"
    write_jpegs(jpegs, a.images)
    if not dst.exists():
        prepare(str(jpegs), str(dst), image_size=64, crop=148, val_size=0.05, num_workers=a.num_workers)
    folder = ImageFolderDataModule(str(jpegs), image_size=64, batch_size=128, val_size=0.05, num_workers=a.num_workers)
    folder.setup("fit")
    result = {"images": a.images, "num_workers": a.num_workers, "batch_size": 128,
              "image_folder_images_per_s": rate(folder.train_dataloader(), a.seconds),
              "streaming_images_per_s": rate(StreamingDataModule(str(dst), batch_size=128,
                                                                 num_workers=a.num_workers).train_dataloader(), a.seconds)}
    result["speedup"] = result["streaming_images_per_s"] / result["image_folder_images_per_s"]
    model = model_rate(dst, work, warmup=5, steps=a.model_steps, num_workers=a.num_workers)
    result["celeba_model_images_per_s"] = model["images_per_s"]
    result["streaming_over_model"] = result["streaming_images_per_s"] / model["images_per_s"]
    result["rss"] = {}
    for n in (int(s) for s in a.rss_sizes.split(",")):
        prepared = synthetic_prepared(work / f"synthetic-{n}", n, a.num_workers)
        out = work / f"rss-{n}.json"
        subprocess.run([sys.executable, "-m", "bench.streaming", "--workdir", str(work), "--rss-epoch", str(prepared),
                        "--num-workers", str(a.num_workers), "--out", str(out)], check=True, cwd=REPO)
        result["rss"][n] = json.loads(out.read_text())
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
