"""The tiny-step workload: where the model's step is about a millisecond, the trainer's own
per-step cost shows. An MLP VAE (one hidden layer of 64 units each way, 4 latents, Bernoulli,
Adam 1e-3 fused, as in the shipped configs) at batch 32 on the 9,000-image MNIST split of
``bench/workloads.py``; the plain loop (``bench/plain.py --tiny --fused``) against the real
``vae fit`` (configs/base.yaml + configs/mnist/vae.yaml with the model swapped), each in its
own process, in interleaved rounds (A B, then B A). Per-step milliseconds are timed from the
end of step ``warmup`` to the end of step ``warmup + steps`` (start-up, the first steps and the
final checkpoint left out); the ratio is plain ms / fit ms per round (1.0: as fast as the loop).

    python -m bench.tiny                      # 10 rounds × 6,000 timed steps
    python -m bench.tiny --rounds 2 --steps 500  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from bench import workloads as w
from bench.run import FIT_DATA, PY, call, fit_yaml, run_module, vae_command

TINY_MODEL = [
    "--model.init_args.latent_dim",
    str(w.TINY_LATENT),
    "--model.init_args.encoder",
    "vae_lightning.MLPEncoder",
    "--model.init_args.encoder.init_args.hidden",
    f"[{w.TINY_HIDDEN}]",
    "--model.init_args.decoder",
    "vae_lightning.MLPDecoder",
    "--model.init_args.decoder.init_args.hidden",
    f"[{w.TINY_HIDDEN}]",
]


def run_fit(work: Path, tag: str, a, extra: list[str]) -> dict:
    out = work / f"{tag}.json"
    cfg = fit_yaml(work / f"{tag}.yaml", out, a.warmup, a.steps, FIT_DATA.replace(str(w.BATCH), str(w.TINY_BATCH)))
    cmd = [
        *vae_command(),
        "fit",
        "--config",
        "configs/base.yaml",
        "--config",
        "configs/mnist/vae.yaml",
        "--config",
        str(cfg),
        *TINY_MODEL,
        "--data.init_args.data_dir",
        str(work / "mnist"),
        "--trainer.default_root_dir",
        str(work / "runs" / tag),
        *extra,
    ]
    call(cmd, a.threads, work / f"{tag}.log")
    shutil.rmtree(work / "runs" / tag, ignore_errors=True)
    return json.loads(out.read_text())


def ms_per_step(result: dict) -> float:
    return 1000 * result["seconds"] / result["timed_steps"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--no-bar", action="store_true", help="also `vae fit` with the progress display off")
    p.add_argument("--out", default=str(w.REPO / "runs" / "bench" / "tiny.json"))
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vae-bench-tiny-"))
    images, labels, note = w.mnist_images()
    w.write_mnist_raw(work / "mnist", images, labels)
    print(
        f"data: {note}; tiny MLP VAE, batch {w.TINY_BATCH}, threads {a.threads}; load {os.getloadavg()[0]:.1f}; "
        f"logs in {work}",
        flush=True,
    )
    runners = {
        "fit": lambda tag: run_fit(work, tag, a, []),
        "plain-fused": lambda tag: run_module(work, tag, a, a.threads, PY, "bench.plain", "--fused", "--tiny"),
    }
    if a.no_bar:
        runners["fit-no-bar"] = lambda tag: run_fit(work, tag, a, ["--trainer.enable_progress_bar", "false"])
    ms: dict[str, list[float]] = {k: [] for k in runners}
    loads = []
    for r in range(a.rounds):
        for name in list(runners) if r % 2 == 0 else list(runners)[::-1]:
            ms[name].append(ms_per_step(runners[name](f"{name}-{r}")))
        loads.append(os.getloadavg()[0])
        print(
            f"round {r + 1}/{a.rounds}: "
            + ", ".join(f"{k} {v[-1]:.3f}" for k, v in ms.items())
            + f" ms/step (load {loads[-1]:.1f})",
            flush=True,
        )
    results = {"ms_per_step": ms, "load_avg": loads, "data": note, "args": vars(a)}
    print(f"\nms per step (median [min – max] over {a.rounds} rounds)")
    for name, v in ms.items():
        print(f"  {name:<24}{statistics.median(v):8.3f}  [{min(v):.3f} – {max(v):.3f}]")
    print("speed ratios per round, plain ms / fit ms (median [min – max]); goal for fit: >= 0.90")
    for name in runners:
        if name != "plain-fused":
            ratio = [pl / f for pl, f in zip(ms["plain-fused"], ms[name], strict=True)]
            results[f"{name}/plain-fused"] = ratio
            spread = f"[{min(ratio):.3f} – {max(ratio):.3f}]"
            print(f"  {name + ' / plain-fused':<24}{statistics.median(ratio):8.3f}  {spread}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1))
    print(f"\nresults: {a.out}")


if __name__ == "__main__":
    main()
