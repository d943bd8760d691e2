"""Every shipped model at one budget: the runs behind ``docs/zoo.md``.

    python docs/zoo.py sprites --out runs/zoo      # fit + test + traversal of every sprites config
    python docs/zoo.py mnist --out runs/zoo        # the MNIST 9,000/1,000 re-split: fit + test (k = 1000)
    python -m bench.zoo_steps                      # step time of every sprites config / the VAE's (quiet machine)
    python -m bench.zoo_steps --data mnist         # the same for every MNIST config
    python docs/zoo.py table --out runs/zoo        # the Markdown tables, from the runs' summary.json

Each model is the real ``vae fit`` / ``vae test`` / ``vae traverse`` of the shipped configs, with
only the budget on the command line (printed before each run), so the numbers can be reproduced
one by one. The rows are the files of configs/sprites/ and configs/mnist/ (each stacked on its
folder's vae.yaml): a new config is a new row. ``--jobs 2`` runs two models at a time with one
torch thread each. The step-time columns come from ``python -m bench.zoo_steps [--data mnist]``
(the fits' own wall time includes validation and whatever else ran meanwhile).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VAE = [sys.executable, "-m", "vae_lightning"]


def configs(data: str) -> list[str]:
    """Every config in configs/<data>/, the plain VAE first: each stacks on that folder's vae.yaml
    (a new file is a new row, with nothing to list here)."""
    return ["vae", *sorted(p.stem for p in (REPO / "configs" / data).glob("*.yaml") if p.stem != "vae")]


SPRITES, MNIST = configs("sprites"), configs("mnist")
QUIET = ["--trainer.enable_progress_bar", "false"]
# an interrupted fit continues from its last.ckpt (optimizer, data position, RNGs); a first fit starts fresh
RESUME = ["--ckpt_path", "last"]


def run(cmd: list[str], log: Path) -> None:
    print("$ " + " ".join(["vae", *cmd[3:]] if cmd[:3] == VAE else cmd), flush=True)
    with open(log, "a") as f:
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if result.returncode:
        raise SystemExit(f"failed ({result.returncode}), see {log}")


def sprites(name: str, a) -> None:
    root = Path(a.out) / "sprites" / name
    root.mkdir(parents=True, exist_ok=True)
    cfg = ["--config", "configs/base.yaml", "--config", "configs/sprites/vae.yaml"]
    cfg += [] if name == "vae" else ["--config", f"configs/sprites/{name}.yaml"]
    common = [*cfg, "--trainer.default_root_dir", str(root), *QUIET]
    log = root / "zoo.log"
    if not (root / "fit.done").exists():
        run([*VAE, "fit", *common, "--trainer.max_steps", str(a.steps), "--seed_everything", str(a.seed), *RESUME], log)
        (root / "fit.done").write_text("ok\n")
    ckpt = str(run_dir(root) / "last.ckpt")
    # the last checkpoint on 2,048 held-out images (32 batches of 64), k = 100
    test = [*common, "--ckpt_path", ckpt, "--trainer.limit_test_batches", str(a.test_batches)]
    run([*VAE, "test", *test, "--disentanglement.metrics", f"[{','.join(a.metrics)}]"], log)
    run([*VAE, "traverse", ckpt, "--out", str(REPO / "docs/images/zoo" / f"{name}.png")], log)


def mnist_data(out: Path) -> Path:
    from bench import workloads as w

    images, labels, note = w.mnist_images()
    if "SYNTHETIC" in note:
        raise SystemExit(f"the MNIST table needs the real MNIST test split: {note}")
    return w.write_mnist_raw(out / "mnist-9k-1k", images, labels)  # train: first 9,000; test: last 1,000


def mnist(name: str, a) -> None:
    root = Path(a.out) / "mnist" / name
    root.mkdir(parents=True, exist_ok=True)
    common = ["--config", "configs/base.yaml", "--config", "configs/mnist/vae.yaml"]
    common += [] if name == "vae" else ["--config", f"configs/mnist/{name}.yaml"]
    common += ["--data.init_args.data_dir", str(Path(a.out) / "mnist-9k-1k"), "--data.init_args.val_size", "500"]
    common += ["--trainer.default_root_dir", str(root), *QUIET]
    log = root / "zoo.log"
    if not (root / "fit.done").exists():
        run([*VAE, "fit", *common, "--trainer.max_steps", str(a.steps), "--seed_everything", str(a.seed), *RESUME], log)
        (root / "fit.done").write_text("ok\n")
    ckpt = str(run_dir(root) / "last.ckpt")
    run([*VAE, "test", *common, "--ckpt_path", ckpt, "--model.init_args.iw_samples", str(a.k)], log)
    (root / "test.json").write_text(json.dumps({"k": a.k}) + "\n")  # the table names each row's k


def run_dir(root: Path) -> Path:
    """The newest checkpoints/version_N that holds a last.ckpt: a fit killed before its first
    checkpoint leaves a version folder without one, and the next fit starts afresh in N + 1."""
    done = [p.parent for p in (root / "checkpoints").glob("version_*/last.ckpt")]
    if not done:
        raise SystemExit(f"{root}: no checkpoints/version_*/last.ckpt; run its fit first")
    return max(done, key=lambda p: int(p.name.removeprefix("version_")))


def summary(root: Path) -> dict:
    return json.loads((run_dir(root) / "summary.json").read_text())


def table(a) -> None:
    out = Path(a.out)
    cols = {
        "sprites": [
            ("test/elbo", "ELBO"),
            ("test/nll_iw", "nll_iw (k=100)"),
            ("test/active_units", "active units"),
            ("test/mig", "MIG"),
            ("test/factor_vae", "FactorVAE"),
            ("test/dci_disentanglement", "DCI-D"),
            ("test/sap", "SAP"),
        ],
        "mnist": [
            ("test/elbo", "ELBO"),
            ("test/nll_iw", "nll_iw"),
            ("k", "k"),
            ("test/kl", "KL"),
            ("test/recon", "recon"),
            ("test/active_units", "active units"),
            ("test/mi", "MI"),
        ],
    }
    for data, keys in cols.items():
        runs = {
            p.name: {**summary(p), **(json.loads((p / "test.json").read_text()) if (p / "test.json").is_file() else {})}
            for p in sorted((out / data).iterdir())
            if any(p.glob("checkpoints/version_*/last.ckpt"))
        }
        if not runs:
            continue
        # step time from the quiet interleaved benchmark (a fit's wall_time includes validation and
        # whatever else ran on the machine meanwhile); bench.zoo_steps --data mnist writes *_mnist.json
        steps = Path(a.step_times)
        steps = steps.with_name(f"{steps.stem}_mnist.json") if data == "mnist" else steps
        ratio = json.loads(steps.read_text())["ratio_to_vae"] if steps.is_file() else {}
        print(f"\n{data}\n\n| model | " + " | ".join(h for _, h in keys) + " | step time / VAE |")
        print("|---" * (len(keys) + 2) + "|")
        for n, s in runs.items():
            cells = [f"{s[k]:.4g}" if isinstance(s.get(k), (int, float)) else "—" for k, _ in keys]
            q = ratio.get(n)
            rel = f" {statistics.median(q):.2f} [{min(q):.2f}–{max(q):.2f}] |" if q else " — |"
            print(f"| {n} | " + " | ".join(cells) + " |" + rel)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["sprites", "mnist", "table"])
    p.add_argument("--out", default="runs/zoo")
    p.add_argument("--only", nargs="*", help="model names (default: all)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: 5,000 sprites, 7,000 MNIST)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="models trained at once (one torch thread each if > 1)")
    p.add_argument("--test-batches", type=int, default=32, help="sprites test batches of 64 (default: 32)")
    p.add_argument(
        "--step-times", default=str(REPO / "runs/bench/zoo_steps.json"), help="python -m bench.zoo_steps's results"
    )
    p.add_argument(
        "--metrics",
        nargs="+",
        default=["mig", "factor_vae", "dci", "sap"],
        help="sprites disentanglement metrics (default: the table's; every metric's number is the same alone)",
    )
    p.add_argument("--k", type=int, default=1000, help="importance samples of the MNIST test (default: 1000)")
    a = p.parse_args()
    if a.what == "table":
        return table(a)
    a.steps = a.steps or (5000 if a.what == "sprites" else 7000)
    names = a.only or (SPRITES if a.what == "sprites" else MNIST)
    if a.what == "mnist":
        mnist_data(Path(a.out))
    (REPO / "docs/images/zoo").mkdir(parents=True, exist_ok=True)
    if a.jobs > 1:
        os.environ["OMP_NUM_THREADS"] = "1"
    job = sprites if a.what == "sprites" else mnist
    start = time.monotonic()
    with ThreadPoolExecutor(a.jobs) as pool:
        for f in [pool.submit(job, n, a) for n in names]:
            f.result()
    print(f"done in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
