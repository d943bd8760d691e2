"""The baseline: a plain PyTorch loop over a pre-loaded tensor, with the same nets, objective,
data, batch size and thread count as the ``vae fit`` run. Writes images/s as JSON.

    python -m bench.plain --out plain.json --warmup 30 --steps 300 --threads 2 [--fused]

Without ``--fused`` the optimizer is ``torch.optim.Adam(params, lr)`` as one would write it;
with it, Adam's fused implementation, as ``vae fit``'s shipped configs use.
"""

from __future__ import annotations

import json
import time

import torch

from bench import workloads as w


def train(warmup: int, steps: int, fused: bool = False, tiny: bool = False) -> dict:
    """Train ``warmup + steps`` steps; returns the timing of the last ``steps``. ``tiny``: the
    tiny-step workload (``workloads.tiny_nets``, batch ``workloads.TINY_BATCH``)."""
    from vae_lightning.likelihoods import Bernoulli

    images, _, _ = w.mnist_images()
    data = w.train_images(images)
    encoder, decoder = w.tiny_nets() if tiny else w.nets()
    batch = w.TINY_BATCH if tiny else w.BATCH
    likelihood = Bernoulli()
    params = [*encoder.parameters(), *decoder.parameters()]
    opt = torch.optim.Adam(params, lr=w.LR, fused=fused or None)  # None: torch's default loop
    g = torch.Generator().manual_seed(w.SEED)
    per_epoch = len(data) // batch  # drop_last, like vae fit's training loader
    done, images_seen, t0 = 0, 0, None
    while done < warmup + steps:
        perm = torch.randperm(len(data), generator=g)
        for b in range(per_epoch):
            x = data[perm[b * batch : (b + 1) * batch]]
            loss = w.objective(encoder, decoder, likelihood, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == warmup:
                t0, c0 = time.perf_counter(), time.process_time()
            elif done > warmup:
                images_seen += x.shape[0]
            if done == warmup + steps:
                break
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "runner": "plain loop" + (" (fused Adam)" if fused else ""),
        "threads": torch.get_num_threads(),
        "timed_steps": steps,
        "seconds": seconds,
        "images_per_s": images_seen / seconds,
        "images_per_cpu_s": images_seen / cpu,
        "loss": loss.item(),
    }


def main() -> None:
    a = w.runner_args()
    with open(a.out, "w") as f:
        json.dump(train(a.warmup, a.steps, a.fused, a.tiny), f)


if __name__ == "__main__":
    main()
