"""Run every benchmark side by side and print one table (medians and min–max over rounds).

    python -m bench                      # the full run of docs/benchmarks.md (~25 min on 2 cores)
    python -m bench --rounds 2 --steps 60 --no-pythae --no-compile   # a quick look

Training speed is measured in rounds; in each round every runner trains the same workload
(``bench/workloads.py``) in its own process, one after the other, in alternating order
(A B C, then C B A), so machine noise hits all of them alike; ratios are taken per round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import workloads as w

REPO = w.REPO
PY = sys.executable
VENV_PYTHAE = REPO / "bench" / ".venv-pythae"


def vae_command() -> list[str]:
    script = Path(PY).parent / "vae"
    return [str(script)] if script.exists() else [PY, "-m", "vae_lightning"]


def env(threads: int, first: str | None = None) -> dict[str, str]:
    path = os.pathsep.join(p for p in (first, str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "OMP_NUM_THREADS": str(threads),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONUNBUFFERED": "1",
    }


def call(cmd: list[str], threads: int, log: Path, timeout: float = 1800, src: str | None = None) -> float:
    """Run ``cmd`` with its output in ``log`` (``src``: a folder whose ``vae_lightning`` is used
    instead of this one); returns the wall time.time() it started at."""
    started = time.time()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=REPO, env=env(threads, src), stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode:
        tail = log.read_text().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(cmd[:3])} … failed (exit {proc.returncode}); log {log}:\n" + "\n".join(tail))
    return started


def fit_yaml(path: Path, out: Path, warmup: int, steps: int, extra: str = "") -> Path:
    """The bench's own config layer: run length, the timing callback, no validation."""
    path.write_text(f"""trainer:
  max_steps: {warmup + steps}
  limit_val_batches: 0
  callbacks:
    - class_path: bench.throughput.Throughput
      init_args: {{out: {out}, warmup: {warmup}, steps: {steps}}}
{extra}""")
    return path


# the bench's data layer over configs/mnist/vae.yaml: one fixed binarization, no validation split
FIT_DATA = f"data:\n  init_args: {{binarize: fixed, val_size: 0, batch_size: {w.BATCH}}}\n"


def run_fit(work: Path, tag: str, a, threads: int, model_args: list[str], src: str | None = None) -> dict:
    """`vae fit` on the MNIST workload through configs/base.yaml + configs/mnist/vae.yaml."""
    out = work / f"{tag}.json"
    bench_cfg = fit_yaml(work / f"{tag}.yaml", out, a.warmup, a.steps, FIT_DATA)
    cmd = [
        *vae_command(),
        "fit",
        "--config",
        "configs/base.yaml",
        "--config",
        "configs/mnist/vae.yaml",
        "--config",
        str(bench_cfg),
        "--data.init_args.data_dir",
        str(work / "mnist"),
        "--trainer.default_root_dir",
        str(work / "runs" / tag),
        *model_args,
    ]
    call(cmd, threads, work / f"{tag}.log", src=src)
    shutil.rmtree(work / "runs" / tag, ignore_errors=True)  # checkpoints and W&B files: not needed
    return json.loads(out.read_text())


def run_module(work: Path, tag: str, a, threads: int, python: str, module: str, *extra: str) -> dict:
    out = work / f"{tag}.json"
    call(
        [
            python,
            "-m",
            module,
            "--out",
            str(out),
            "--warmup",
            str(a.warmup),
            "--steps",
            str(a.steps),
            "--threads",
            str(threads),
            *extra,
        ],
        threads,
        work / f"{tag}.log",
    )
    return json.loads(out.read_text())


def pythae_python() -> str | None:
    """Python of bench/.venv-pythae: our environment (via a .pth file) plus pythae from pip."""
    python = VENV_PYTHAE / "bin" / "python"
    if not python.exists():
        print("setting up bench/.venv-pythae (pip install pythae; torch comes from this environment) …", flush=True)
        try:
            subprocess.run([PY, "-m", "venv", str(VENV_PYTHAE)], check=True)
            purelib = subprocess.run(
                [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            ours = subprocess.run(
                [PY, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            Path(purelib, "vae_lightning_env.pth").write_text(ours + "\n")
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "pythae"], check=True, timeout=900)
        except (subprocess.SubprocessError, OSError) as err:
            print(f"pythae skipped: could not install it ({err}).", flush=True)
            shutil.rmtree(VENV_PYTHAE, ignore_errors=True)
            return None
    return str(python)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):8.3f}  [{min(values):.3f} – {max(values):.3f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="interleaved rounds of the training runners "
        "(a single run scatters by ±15 %% on a 2-core VM: fewer rounds do not reproduce the medians)",
    )
    p.add_argument("--warmup", type=int, default=30, help="steps left out of each timing")
    p.add_argument("--steps", type=int, default=300, help="steps timed per run")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads in every runner")
    p.add_argument("--no-pythae", action="store_true", help="leave out pythae's trainer")
    p.add_argument("--no-compile", action="store_true", help="leave out `vae fit` with compile: true")
    p.add_argument("--no-extras", action="store_true", help="only the training rounds")
    p.add_argument(
        "--csv",
        action="store_true",
        help="also time `vae fit` with configs/logger/csv.yaml instead "
        "of the W&B logger of configs/base.yaml (what W&B costs)",
    )
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="runners to time (fit, plain, plain-fused, pythae, compile, and fit-csv/fit-before when asked for)",
    )
    p.add_argument(
        "--before",
        metavar="DIR",
        help="also time `vae fit` with the vae_lightning package in DIR "
        "(e.g. `git archive <commit> vae_lightning | tar -x -C DIR`): before/after a change",
    )
    p.add_argument(
        "--mnist",
        metavar="DIR",
        default=str(w.SHARED_MNIST),
        help="folder with MNIST's t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz",
    )
    p.add_argument("--out", default=str(REPO / "runs" / "bench" / "results.json"))
    a = p.parse_args()
    from bench.extras import run_extras

    work = Path(tempfile.mkdtemp(prefix="vae-bench-"))
    os.environ["VAE_BENCH_MNIST"] = a.mnist  # read by every runner through bench.workloads
    images, labels, note = w.mnist_images()
    w.write_mnist_raw(work / "mnist", images, labels)
    print(f"data: {note}; {w.N_TRAIN} images, batch {w.BATCH}, threads {a.threads}; logs in {work}", flush=True)

    runners = {
        "fit": lambda t, tag: run_fit(work, tag, a, a.threads, []),
        "plain": lambda t, tag: run_module(work, tag, a, a.threads, PY, "bench.plain"),
        # the same loop with the fused Adam of the shipped configs: fit against the same optimizer code
        "plain-fused": lambda t, tag: run_module(work, tag, a, a.threads, PY, "bench.plain", "--fused"),
    }
    if a.csv:
        runners["fit-csv"] = lambda t, tag: run_fit(work, tag, a, a.threads, ["--config", "configs/logger/csv.yaml"])
    if a.before:
        runners["fit-before"] = lambda t, tag: run_fit(work, tag, a, a.threads, [], src=str(Path(a.before).resolve()))
    if not a.no_pythae:
        python = pythae_python()
        if python:
            runners["pythae"] = lambda t, tag: run_module(work, tag, a, a.threads, python, "bench.pythae_run")
    if not a.no_compile:
        runners["compile"] = lambda t, tag: run_fit(work, tag, a, a.threads, ["--model.init_args.compile", "true"])
    if a.only:
        runners = {k: v for k, v in runners.items() if k in a.only}

    rates: dict[str, list[float]] = {k: [] for k in runners}
    cpu_rates: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(a.rounds):
        order = list(runners) if r % 2 == 0 else list(runners)[::-1]
        for name in order:
            res = runners[name](a.threads, f"{name}-{r}")
            assert res["threads"] == a.threads, res
            rates[name].append(res["images_per_s"])
            cpu_rates[name].append(res["images_per_cpu_s"])
        print(
            f"round {r + 1}/{a.rounds}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()) + " img/s",
            flush=True,
        )

    results = {
        "machine": machine(),
        "args": vars(a),
        "data": note,
        "images_per_s": rates,
        "images_per_cpu_s": cpu_rates,
    }
    lines = ["", f"training images/s (median [min – max] over {a.rounds} rounds)"]
    lines += [f"  {name:<28}{summary(v)}" for name, v in rates.items()]
    if "plain" in rates:
        lines.append("ratios per round (median [min – max])")
        for name in rates:
            if name != "plain":
                ratio = [x / y for x, y in zip(rates[name], rates["plain"])]
                results[f"{name}/plain"] = ratio
                lines.append(f"  {name + ' / plain loop':<28}{summary(ratio)}")
        if "plain-fused" in rates and "fit" in rates:
            ratio = [x / y for x, y in zip(rates["fit"], rates["plain-fused"])]
            results["fit/plain-fused"] = ratio
            lines.append(f"  {'fit / plain-fused':<28}{summary(ratio)}")
        if "pythae" in rates and "fit" in rates:
            ratio = [x / y for x, y in zip(rates["fit"], rates["pythae"])]
            results["fit/pythae"] = ratio
            lines.append(f"  {'fit / pythae':<28}{summary(ratio)}")
        lines.append("the same by CPU time of the training process (images per CPU-second; less sensitive to load)")
        for name in rates:
            if name != "plain":
                ratio = [x / y for x, y in zip(cpu_rates[name], cpu_rates["plain"])]
                lines.append(f"  {name + ' / plain loop':<28}{summary(ratio)}")
    if not a.no_extras:
        extras = run_extras(work, a, rates.get("fit"), call, fit_yaml, vae_command)
        results["extras"] = extras
        lines += extras.pop("lines")
    print("\n".join(lines))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1))
    print(f"\nresults: {a.out}")


def machine() -> dict:
    import lightning
    import torch

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "load_avg_at_start": os.getloadavg(),
    }
