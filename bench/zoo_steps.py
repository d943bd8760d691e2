"""Training-step time of every sprites (or MNIST) config relative to the plain VAE, for docs/zoo.md.

    python -m bench.zoo_steps                   # 7 rounds, 20 + 100 steps per model (~10 min on 2 cores)
    python -m bench.zoo_steps --rounds 2 --steps 30 --only vae iwae   # a quick look
    python -m bench.zoo_steps --data mnist      # every configs/mnist/*.yaml on the zoo's MNIST re-split

Every model trains through the real CLI (`vae_lightning.cli.main`, configs/base.yaml +
configs/sprites/vae.yaml + its own file) inside ONE process, one thread, no validation, with the
bench's timing callback; in each round every model runs once, the order reversed every other
round, so machine noise hits all alike. The ratio to the VAE is taken within each round; the
table shows its median and [min – max] over rounds.
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

from bench import workloads as w
from bench.run import fit_yaml


def models(data: str) -> list[str]:
    """Every config in configs/<data>/, the plain VAE first (the reference)."""
    return ["vae", *sorted(p.stem for p in (w.REPO / "configs" / data).glob("*.yaml") if p.stem != "vae")]


MODELS = models("sprites")
#: the MNIST configs run on the zoo's re-split (``docs/zoo.py mnist`` writes it)
MNIST_DATA = ["--data.init_args.data_dir", "runs/zoo/mnist-9k-1k", "--data.init_args.val_size", "500"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as docs/zoo.py --jobs 2)")
    p.add_argument("--data", choices=["sprites", "mnist"], default="sprites", help="which configs (default: sprites)")
    p.add_argument("--only", nargs="*", help="models (default: all; vae is always included)")
    p.add_argument("--out", help="results (default: runs/bench/zoo_steps.json, zoo_steps_mnist.json)")
    a = p.parse_args()
    known = models(a.data)
    unknown = [m for m in a.only or [] if m not in known]
    if unknown:
        p.error(f"--only: no configs/{a.data}/{unknown[0]}.yaml; choose from {', '.join(known)}")
    names = ["vae", *[m for m in (a.only or known) if m != "vae"]]
    suffix = "" if a.data == "sprites" else f"_{a.data}"
    a.out = a.out or str(w.REPO / "runs" / "bench" / f"zoo_steps{suffix}.json")
    torch.set_num_threads(a.threads)
    os.environ.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    os.chdir(w.REPO)  # the config paths below are relative to the repository
    from vae_lightning.cli import main as vae

    work = Path(tempfile.mkdtemp(prefix="vae-bench-zoo-"))
    print(f"one process, threads {a.threads}, {a.warmup} + {a.steps} steps per model and round; logs in {work}")

    def seconds_per_step(name: str, r: int) -> float:
        tag = f"{name}-{r}"
        out = work / f"{tag}.json"
        layers = ["--config", "configs/base.yaml", "--config", f"configs/{a.data}/vae.yaml"]
        layers += [] if name == "vae" else ["--config", f"configs/{a.data}/{name}.yaml"]
        layers += MNIST_DATA if a.data == "mnist" else []
        cfg = fit_yaml(work / f"{tag}.yaml", out, a.warmup, a.steps)
        vae(
            [
                "fit",
                *layers,
                "--config",
                str(cfg),
                "--trainer.logger",
                "false",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.enable_model_summary",
                "false",
                "--trainer.default_root_dir",
                str(work / tag),
                "--seed_everything",
                "0",
            ]
        )
        shutil.rmtree(work / tag, ignore_errors=True)
        result = json.loads(out.read_text())
        return result["seconds"] / result["timed_steps"]

    times: dict[str, list[float]] = {m: [] for m in names}
    for r in range(a.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(seconds_per_step(name, r))
        print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{m} {v[-1] * 1e3:.1f}" for m, v in times.items()) + " ms")

    print(f"\nstep time / VAE's, per round (median [min – max] over {a.rounds} rounds)")
    ratios = {m: [x / y for x, y in zip(times[m], times["vae"])] for m in names}
    for m in names:
        q = ratios[m]
        ms = statistics.median(times[m]) * 1e3
        print(f"  {m:<20}{statistics.median(q):6.2f}  [{min(q):.2f} – {max(q):.2f}]   ({ms:.1f} ms/step)")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"seconds_per_step": times, "ratio_to_vae": ratios}, indent=1))
    print(f"\nresults: {a.out}")


if __name__ == "__main__":
    main()
