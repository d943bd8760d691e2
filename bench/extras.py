"""The one-off measurements: data path, `vae --help`, and a full-size sprites run (peak RSS,
time to the first optimizer step, images/s)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from bench import workloads as w


def help_seconds(vae: list[str], env: dict, n: int = 5) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([*vae, "--help"], env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def run_extras(work: Path, a, fit_rates, call, fit_yaml, vae_command) -> dict:
    from bench.run import PY, env

    lines = ["", "other measurements"]
    out: dict = {}
    # data path alone
    data_json = work / "data.json"
    call(
        [
            PY,
            "-m",
            "bench.data_path",
            "--mnist-root",
            str(work / "mnist"),
            "--threads",
            str(a.threads),
            "--out",
            str(data_json),
        ],
        a.threads,
        work / "data.log",
    )
    data = json.loads(data_json.read_text())
    out["data_path"] = data
    lines.append(
        f"  MNIST loader, batches/s (batch {w.BATCH}): ours {data['mnist_ours']:.0f}, "
        f"per-item DataLoader {data['mnist_per_item']:.0f} -> {data['mnist_ours'] / data['mnist_per_item']:.1f}x"
    )
    if fit_rates:
        model = statistics.median(fit_rates) / w.BATCH
        lines.append(
            f"  MNIST loader / model consumption ({model:.1f} batches/s in vae fit): {data['mnist_ours'] / model:.1f}x"
        )
        out["mnist_loader_over_model"] = data["mnist_ours"] / model
    # sprites: the shipped config, full size, a short run
    sprites_json = work / "sprites.json"
    warm, steps = 10, 50
    cfg = fit_yaml(work / "sprites.yaml", sprites_json, warm, steps)
    started = call(
        [
            *vae_command(),
            "fit",
            "--config",
            "configs/base.yaml",
            "--config",
            "configs/sprites/vae.yaml",
            "--config",
            str(cfg),
            "--trainer.default_root_dir",
            str(work / "runs" / "sprites"),
        ],
        a.threads,
        work / "sprites.log",
    )
    s = json.loads(sprites_json.read_text())
    out["sprites"] = {**s, "first_step_after_s": s["first_step_at"] - started}
    model = s["images_per_s"] / 64
    lines.append(
        f"  sprites loader, batches/s (batch 64, 737,280 images): {data['sprites_ours']:.0f} = "
        f"{data['sprites_ours'] / model:.1f}x the model's consumption ({model:.1f} batches/s in vae fit)"
    )
    lines.append(
        f"  sprites vae fit (full size): peak RSS {s['peak_rss_mb']:.0f} MB, first optimizer step "
        f"{s['first_step_at'] - started:.1f} s after start, {s['images_per_s']:.0f} img/s"
    )
    micro_json = work / "micro.json"
    call(
        [PY, "-m", "bench.micro", "--threads", str(a.threads), "--out", str(micro_json)], a.threads, work / "micro.log"
    )
    micro = json.loads(micro_json.read_text())
    out["micro"] = micro["rows"]
    lines += ["", "single operations, before -> after the speed work (best of 5)"]
    lines += [f"  {name:<44}{before:10.1f} -> {after:9.1f}" for name, before, after in micro["rows"]]
    lines.append("")
    h = help_seconds(vae_command(), env(a.threads))
    out["help_s"] = h
    lines.append(f"  vae --help: {statistics.median(h):.2f} s (median of {len(h)}; [{min(h):.2f} – {max(h):.2f}])")
    out["load_avg_at_end"] = os.getloadavg()
    lines.append(f"  load average at the end: {out['load_avg_at_end'][0]:.2f}")
    out["lines"] = lines
    return out
