"""``python -m bench.chaos --interruptions 100``: a robustness benchmark, not a timing one.

One CPU fit of a tiny VAE is interrupted at seeded random points (SIGKILL mid-step, SIGKILL
half-way through a checkpoint write, USR1 under SLURM variables with a fake ``scontrol`` that
only records the requeue, an exception in a training step) and started again each time with the
same command and ``--ckpt_path last``. It must end with weights, optimizer state and global step
bitwise equal to the same fit run without interruptions. ``tests/test_chaos.py`` runs a short
schedule of it. The schedule is a list of ``(kind, n)``, see ``bench/chaos_inject.py``.
``--ema`` stacks ``configs/trainer/ema.yaml`` on the fit (Lightning's EMAWeightAveraging): then the
averaged weights (``state_dict``), the raw ones (``current_model_state``), the averaging state and
the callback's own state must be bitwise equal too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.chaos_inject import FAKE_SLURM, MARK, QUIET_CPU

REPO = Path(__file__).resolve().parents[1]
KINDS = ("kill", "kill_save", "usr1", "raise")
EVERY = 10  # checkpoint.every_n_train_steps: a checkpoint write costs more than a step here
# 240 sprites, 40 held out, batch 16: 12 steps an epoch; a short validation every 50 steps; nets
# narrower than conftest.TINY_MODEL's, for smaller checkpoints (two files every EVERY steps)
ARGS = [
    "--model",
    "vae_lightning.VAE",
    "--model.init_args.latent_dim",
    "4",
    "--model.init_args.encoder",
    "vae_lightning.MLPEncoder",
    "--model.init_args.encoder.init_args.hidden",
    "[8]",
    "--model.init_args.decoder",
    "vae_lightning.MLPDecoder",
    "--model.init_args.decoder.init_args.hidden",
    "[8]",
    "--data",
    "vae_lightning.data.SpritesDataModule",
    "--data.init_args.num_images",
    "240",
    "--data.init_args.val_size",
    "40",
    "--data.init_args.batch_size",
    "16",
    *QUIET_CPU,
    "--trainer.devices",
    "1",
    "--trainer.val_check_interval",
    "50",
    "--trainer.check_val_every_n_epoch",
    "null",
    "--trainer.limit_val_batches",
    "1",
    "--images.every_n_val",
    "0",
    "--checkpoint.every_n_train_steps",
    str(EVERY),
    "--checkpoint.monitor",
    "null",  # with a monitor Lightning defers periodic saves to the first validation
    "--ckpt_path",
    "last",
]


def schedule(interruptions: int, seed: int, steps: int) -> list[tuple[str, int]]:
    """Seeded: each kind about equally often, in random order; n is the step (or, for
    kill_save, the checkpoint file) of the start at which it strikes, spread so that the
    interruptions cover the whole run."""
    rng = random.Random(seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(interruptions)]
    rng.shuffle(kinds)
    span = max(2 * EVERY, 2 * steps // max(interruptions, 1))
    return [(k, rng.randint(1, span // EVERY) if k == "kill_save" else rng.randint(1, span)) for k in kinds]


def clamp(fault: tuple[str, int], remaining: int) -> tuple[str, int]:
    """The fault moved into the steps that remain, so that it strikes before the fit ends (each
    ``EVERY`` steps write at least one checkpoint file, the final step one too)."""
    kind, n = fault
    return kind, min(n, max(1, remaining // EVERY) if kind == "kill_save" else remaining)


def _env(bin_dir: Path, fault: tuple[str, int] | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "VAE_RUN_DIR"}
    env |= {"PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    env["VAE_CHAOS"] = f"{fault[0]}:{fault[1]}" if fault else "none:0"
    if fault and fault[0] == "usr1":  # SLURMPreemption acts on USR1 only in a SLURM job
        env |= {**FAKE_SLURM, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}
    return env


#: what ``--ema`` adds to the fit's command line
EMA = ("--config", "configs/trainer/ema.yaml")


def start(
    root: Path, steps: int, fault: tuple[str, int] | None, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """One start of the fit: the same command every time, ``--ckpt_path last``; ``extra`` arguments first."""
    timeout = 120 + steps  # generous: a loaded machine runs a step and its checkpoint writes slowly
    bin_dir = root / "bin"  # a fake scontrol: records `scontrol requeue <job>`, requeues nothing
    if not (bin_dir / "scontrol").exists():
        bin_dir.mkdir(parents=True, exist_ok=True)
        (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {root / "requeues.txt"}\n')
        (bin_dir / "scontrol").chmod(0o755)
    command = [sys.executable, "-m", "bench.chaos_inject", "fit", *extra, *ARGS]
    command += ["--trainer.default_root_dir", str(root / "run"), "--trainer.max_steps", str(steps)]
    return subprocess.run(
        command,
        cwd=REPO,
        env=_env(bin_dir, fault),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_step(root: Path) -> int | None:
    """The global step of the checkpoint ``--ckpt_path last`` resumes from (None: none yet)."""
    from vae_lightning.runtime.checkpoint import find_last

    last = find_last(root / "run" / "checkpoints")
    return None if last is None else torch.load(last, map_location="cpu", weights_only=False)["global_step"]


def _struck(fault: tuple[str, int], result: subprocess.CompletedProcess, requeued: bool) -> bool:
    """Did the interruption happen (and nothing else go wrong)?"""
    kind = fault[0]
    if kind in ("kill", "kill_save"):
        return result.returncode == -9
    if kind == "raise":
        return result.returncode == 1 and MARK in result.stderr
    return result.returncode == 0 and requeued


#: what two checkpoints must hold alike: weights, optimizer, step, and under weight averaging the raw
#: weights beside the average and the averaging state
COMPARED = ("state_dict", "optimizer_states", "global_step", "current_model_state", "averaging_state")


def differences(a: Path, b: Path) -> list[str]:
    """Names of what differs between two checkpoints: every tensor of ``COMPARED`` (bitwise, dtype
    included; a key in one only differs), the optimizers' hyper-parameters, global_step, and the
    state of a weight-averaging callback."""
    x, y = (torch.load(p, map_location="cpu", weights_only=False) for p in (a, b))

    def part(ckpt: dict) -> dict:
        averaging = {k: v for k, v in ckpt.get("callbacks", {}).items() if "WeightAveraging" in k}
        return {**{k: ckpt[k] for k in COMPARED if k in ckpt}, "averaging_callbacks": averaging}

    return _diff(part(x), part(y), "")


def _diff(x, y, where: str) -> list[str]:
    if torch.is_tensor(x) or torch.is_tensor(y):
        same = torch.is_tensor(x) and torch.is_tensor(y) and x.dtype == y.dtype and torch.equal(x, y)
        return [] if same else [where]
    if isinstance(x, dict) and isinstance(y, dict):
        if x.keys() != y.keys():
            return [f"{where} (keys)"]
        return [d for k in x for d in _diff(x[k], y[k], f"{where}.{k}")]
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        if len(x) != len(y):
            return [f"{where} (length)"]
        return [d for i, (u, v) in enumerate(zip(x, y)) for d in _diff(u, v, f"{where}[{i}]")]
    return [] if x == y else [where]


def _requeues(root: Path) -> int:
    path = root / "requeues.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _partial_files(root: Path) -> set[str]:
    """The temporary files of checkpoint writes that a kill cut short (runtime/atomic.py names them)."""
    return {p.name for p in root.rglob(".*.ckpt.tmp-*")}


class ChaosFailure(AssertionError):
    """A start that failed for another reason than its interruption, or a final state that differs."""


def run(folder: Path, interruptions: int, seed: int, steps: int, log=lambda line: None, ema: bool = False) -> dict:
    """The uninterrupted fit, then the interrupted one; a report (raises ``ChaosFailure``).
    ``log`` gets a line per interruption as it happens; ``ema``: both fits average their weights."""
    began = time.monotonic()
    extra = EMA if ema else ()
    straight = start(folder / "straight", steps, None, extra)
    if straight.returncode:
        raise ChaosFailure(f"the uninterrupted fit failed:\n{straight.stderr[-3000:]}")
    chaos, pending, events, starts = folder / "chaos", schedule(interruptions, seed, steps), [], 0
    replay = f"python -m bench.chaos --interruptions {interruptions} --seed {seed} --steps {steps}" + " --ema" * ema
    while True:
        before = last_step(chaos) or 0
        fault = clamp(pending[0], steps - before) if pending else None
        requeues, partial = _requeues(chaos), _partial_files(chaos)
        result = start(chaos, steps, fault, extra)
        starts += 1
        if fault and _struck(fault, result, _requeues(chaos) > requeues):
            event = {"kind": fault[0], "n": fault[1], "resumed_from": before, "saved": last_step(chaos) or 0}
            events.append({**event, "half_written": sorted(_partial_files(chaos) - partial)})
            log(f"{fault[0]:>9} n={fault[1]:<3} resumed from step {before:>5}, saved {event['saved']}")
            pending.pop(0)
            continue
        if result.returncode or last_step(chaos) != steps:
            raise ChaosFailure(
                f"start {starts} (interruption {fault}, resumed from step {before}) exited {result.returncode} "
                f"without its interruption; replay: {replay}\n{result.stderr[-3000:]}"
            )
        break
    from vae_lightning.runtime.checkpoint import find_last

    differ = differences(
        find_last(chaos / "run" / "checkpoints"), find_last(folder / "straight" / "run" / "checkpoints")
    )
    kinds = {k: sum(e["kind"] == k for e in events) for k in KINDS}
    return {
        "seed": seed,
        "steps": steps,
        "interruptions": len(events),
        "kinds": kinds,
        "starts": starts,
        "restarts": starts - 1,
        "events": events,
        "differ": differ,
        "equal": not differ,
        "wall_s": round(time.monotonic() - began, 1),
        "replay": replay,
    }


def main(argv: list[str] | None = None) -> None:
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--interruptions", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="training steps (default: 15 per interruption, at least 300)")
    parser.add_argument("--out", type=Path, help="also write the report as JSON here")
    parser.add_argument("--ema", action="store_true", help="with weight averaging (configs/trainer/ema.yaml)")
    args = parser.parse_args(argv)
    steps = args.steps or max(300, 15 * args.interruptions)
    with tempfile.TemporaryDirectory(prefix="vae-chaos-") as folder:
        report = run(Path(folder), args.interruptions, args.seed, steps, lambda line: print(line, flush=True), args.ema)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    final = "bitwise equal" if report["equal"] else "DIFFERS: " + ", ".join(report["differ"])
    print(
        f"{report['interruptions']} interruptions {report['kinds']}, {report['restarts']} restarts, "
        f"{steps} steps, final state {final}, {report['wall_s']} s"
    )
    sys.exit(0 if report["equal"] else 1)


if __name__ == "__main__":
    main()
