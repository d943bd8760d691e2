"""The raw weights of a checkpoint written with weight averaging, as a checkpoint of their own.

    python docs/raw_weights.py runs/zoo/mnist/vae_ema/checkpoints/version_0/last.ckpt raw/raw.ckpt

A fit with ``configs/trainer/ema.yaml`` saves the average as ``state_dict`` (what ``vae test`` and the
picture commands load) and the weights it trained as ``current_model_state``. This writes a copy
whose ``state_dict`` is the latter, without the averaging keys, so that ``vae test --ckpt_path`` of
the copy measures the same run without the average: docs/zoo.md's EMA comparison (one run, both
weights, the same data order and noise).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def main(src: str, dst: str) -> None:
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    if "current_model_state" not in ckpt:
        raise SystemExit(f"{src} was not written with weight averaging (no current_model_state)")
    ckpt["state_dict"] = ckpt.pop("current_model_state")
    ckpt.pop("averaging_state", None)
    ckpt["callbacks"] = {k: v for k, v in ckpt.get("callbacks", {}).items() if "WeightAveraging" not in k}
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    print(f"wrote the raw weights of {src} (step {ckpt['global_step']}) to {dst}")


if __name__ == "__main__":
    main(*sys.argv[1:])
