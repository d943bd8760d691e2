#!/usr/bin/env bash
# usage: bench/weights_hash.sh CHECKOUT OUTDIR   (PY=python to use; default: this checkout's .venv)
# Behaviour check for refactors (issue 23): seeded 200-step sprites and MNIST fits of CHECKOUT, then
# the sha256 of each last.ckpt's state_dict (keys sorted). Run it on the commits before and after a
# change: equal hashes, same weights. MNIST is ../shared/data/mnist, laid out by bench/workloads.py.
set -euo pipefail
PY=${PY:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
mkdir -p "$2"
export OUT; OUT=$(cd "$2" && pwd)
cd "$1"
export PYTHONPATH=$PWD WANDB_MODE=offline WANDB_SILENT=true
"$PY" -c 'import os; from pathlib import Path; from bench.workloads import mnist_images, write_mnist_raw
x, y, _ = mnist_images(); write_mnist_raw(Path(os.environ["OUT"]) / "mnist", x, y)'
COMMON=(--trainer.max_steps 200 --seed_everything 0 --trainer.logger false)
"$PY" -m vae_lightning fit --config configs/base.yaml --config configs/sprites/vae.yaml "${COMMON[@]}" \
  --trainer.default_root_dir "$OUT/sprites" > "$OUT/sprites.log" 2>&1
"$PY" -m vae_lightning fit --config configs/base.yaml --config configs/mnist/vae.yaml "${COMMON[@]}" \
  --data.init_args.data_dir "$OUT/mnist" --data.init_args.val_size 500 \
  --trainer.default_root_dir "$OUT/mnistrun" > "$OUT/mnist.log" 2>&1
"$PY" -c 'import glob, hashlib, os, torch
for run in ("sprites", "mnistrun"):
    path = sorted(glob.glob(os.path.join(os.environ["OUT"], run, "checkpoints", "*", "last.ckpt")))[-1]
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode()); h.update(state[k].contiguous().numpy().tobytes())
    print(run, h.hexdigest())'
