"""`vae fit` against the plain loop, alternating inside ONE process.

    python -m bench.same_process              # 10 rounds of fit, plain, plain-fused (~12 min on 2 cores)

Why: on the 2-core VM of docs/benchmarks.md a process keeps its speed for its whole life, but
two processes of the same program differ by up to ±10 % (thread placement), more than the few
per cent being measured. `python -m bench` starts every run in a fresh process, as a user
would, and so needs many rounds; here every runner shares one process, and the per-round
ratios scatter much less. `vae fit` still goes through the real CLI and configs
(`vae_lightning.cli.main`), with W&B offline, checkpointing and the progress bar.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import torch

from bench import plain
from bench import workloads as w
from bench.run import FIT_DATA, fit_yaml


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default=str(w.REPO / "runs" / "bench" / "same_process.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    os.environ.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    os.chdir(w.REPO)  # the config paths below are relative to the repository
    from vae_lightning.cli import main as vae

    work = Path(tempfile.mkdtemp(prefix="vae-bench-same-"))
    images, labels, note = w.mnist_images()
    w.write_mnist_raw(work / "mnist", images, labels)
    print(f"data: {note}; one process, threads {a.threads}; logs in {work}", flush=True)

    def fit(tag: str) -> dict:
        out = work / f"{tag}.json"
        cfg = fit_yaml(work / f"{tag}.yaml", out, a.warmup, a.steps, FIT_DATA)
        vae(
            [
                "fit",
                "--config",
                "configs/base.yaml",
                "--config",
                "configs/mnist/vae.yaml",
                "--config",
                str(cfg),
                "--data.init_args.data_dir",
                str(work / "mnist"),
                "--trainer.default_root_dir",
                str(work / tag),
                "--trainer.enable_model_summary",
                "false",
            ]
        )
        import wandb

        wandb.finish()  # the next fit starts its own W&B run, as a new process would
        shutil.rmtree(work / tag, ignore_errors=True)
        return json.loads(out.read_text())

    runners = {
        "fit": fit,
        "plain": lambda tag: plain.train(a.warmup, a.steps),
        "plain-fused": lambda tag: plain.train(a.warmup, a.steps, fused=True),
    }
    rates: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(a.rounds):
        for name in list(runners) if r % 2 == 0 else list(runners)[::-1]:
            rates[name].append(runners[name](f"{name}-{r}")["images_per_s"])
        print(
            f"round {r + 1}/{a.rounds}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()) + " img/s",
            flush=True,
        )

    results = {"rates": rates}
    print(f"\nratios per round, one process (median [min – max] over {a.rounds} rounds)")
    for num, den in (("fit", "plain"), ("fit", "plain-fused"), ("plain-fused", "plain")):
        ratio = [x / y for x, y in zip(rates[num], rates[den])]
        results[f"{num}/{den}"] = ratio
        print(f"  {num + ' / ' + den:<24}{statistics.median(ratio):8.3f}  [{min(ratio):.3f} – {max(ratio):.3f}]")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1))
    print(f"\nresults: {a.out}")


if __name__ == "__main__":
    main()
