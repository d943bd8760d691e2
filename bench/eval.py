"""The disentanglement protocol of `vae test` (all 7 metrics) on a fixed sprites conv model, per
metric: wall time and how much of it is rendering, encoding and the rest (the classifier fits).

    python -m bench.eval                                   # this checkout, 1 round at --scale 0.1
    python -m bench.eval --before /path/to/main --rounds 3 # before/after, interleaved rounds
    python -m bench.eval --scale 1                         # the shipped defaults (many minutes on 2 CPUs)
    python -m bench.eval --dci-spread 5                    # DCI gbt vs hist over 5 tree seeds

The model is `configs/model/conv64.yaml`'s VAE (10 latents), seeded and trained for ``--steps``
Adam steps (batch 64, Adam 1e-3) on rendered sprites in this process, once
(``runs/bench/eval-fixture-<steps>-steps.pt``); its weights go to every run. Each run is a fresh
process whose ``vae_lightning`` is this checkout's or ``--before``'s (PYTHONPATH), calling
``Disentanglement(...).scores`` with every point count multiplied by ``--scale`` (batch sizes,
bins and trees as shipped). The time of a metric runs from its "vae test: … ..." line to its
"…: N s" line; rendering and encoding are timed around the data module's ``render`` and the
model's ``encode``; the rest is the metric's own arithmetic and classifier fits. Reported: the
median [min – max] over rounds of each checkout's seconds and of the per-round ratio before/after.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# each "vae test:" line of the protocol, by the metric group it belongs to (old and new wording)
GROUPS = (
    ("shared draw", "encoding the shared draw (new)"),
    ("MIG", "MIG + FactorVAE"),
    ("FactorVAE", "MIG + FactorVAE"),
    ("DCI", "DCI"),
    ("SAP", "SAP"),
    ("modularity", "modularity + explicitness"),
    ("BetaVAE", "BetaVAE"),
)
SCALED = (
    "num_points",
    "factor_vae_train",
    "factor_vae_eval",
    "num_train",
    "num_test",
    "beta_vae_train",
    "beta_vae_eval",
)
DEFAULTS = dict(
    num_points=10_000,
    factor_vae_train=1000,
    factor_vae_eval=500,
    num_train=10_000,
    num_test=5_000,
    beta_vae_train=1000,
    beta_vae_eval=500,
)


def build_model():
    """conv64.yaml's VAE on 64×64 sprites, built with whichever vae_lightning is on the path."""
    from vae_lightning import VAE

    return VAE(image_shape=(1, 64, 64), latent_dim=10)


def train_fixture(path: Path, steps: int, seed: int = 0) -> None:
    """A seeded model trained ``steps`` Adam steps on random rendered sprites: codes with structure."""
    import torch

    from vae_lightning.data.sprites import FACTOR_SIZES, render
    from vae_lightning.evaluation.disentanglement import sample_factors

    torch.manual_seed(seed)
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        f = model(render(sample_factors(64, FACTOR_SIZES, g)))
        loss = (f.recon + f.kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(model.state_dict(), path)


class _Phases(logging.Handler):
    """Splits a run into the protocol's announced steps, with the render/encode time of each."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.render = self.encode = 0.0
        self.rows: list[dict] = []
        self._open: dict | None = None

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if not msg.startswith("vae test: "):
            return
        if msg.endswith(" ..."):
            self._open = {"step": msg[10:-4], "t": time.perf_counter(), "render": self.render, "encode": self.encode}
        elif self._open is not None and msg.endswith(" s") and msg[10:].startswith(self._open["step"] + ":"):
            o, self._open = self._open, None
            wall = time.perf_counter() - o["t"]
            render, encode = self.render - o["render"], self.encode - o["encode"]
            self.rows.append(dict(step=o["step"], wall=wall, render=render, encode=encode))


def worker(a: argparse.Namespace) -> None:
    """One run of the protocol with the vae_lightning on PYTHONPATH; JSON to ``a.out``."""
    import torch

    torch.set_num_threads(a.threads)
    from vae_lightning.callbacks.disentanglement import Disentanglement
    from vae_lightning.data.sprites import FACTOR_SIZES, render
    from vae_lightning.evaluation.disentanglement import model_representation

    model = build_model()
    model.load_state_dict(torch.load(a.model))
    model.eval()
    phases = _Phases()
    for name in ("lightning.pytorch", "lightning.fabric", ""):  # lightning's loggers do not propagate
        logging.getLogger(name).setLevel(logging.INFO)
        logging.getLogger(name).addHandler(phases)

    def timed(fn, attr):
        def call(x):
            t = time.perf_counter()
            out = fn(x)
            setattr(phases, attr, getattr(phases, attr) + time.perf_counter() - t)
            return out

        return call

    model.encode = timed(model.encode, "encode")
    kwargs = {k: max(2, round(v * a.scale)) for k, v in DEFAULTS.items()}
    if a.dci_model:
        kwargs["dci_model"] = a.dci_model
    t = time.perf_counter()
    values = Disentanglement(**kwargs).scores(model_representation(model, timed(render, "render")), FACTOR_SIZES)
    total = time.perf_counter() - t
    Path(a.out).write_text(json.dumps({"total": total, "phases": phases.rows, "values": values}))


def run_once(src: Path, model: Path, out: Path, a: argparse.Namespace, dci_model: str | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(a.threads), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", str(model), "--out", str(out)]
    cmd += ["--scale", str(a.scale), "--threads", str(a.threads)] + (["--dci-model", dci_model] if dci_model else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=src)
    if proc.returncode:
        raise RuntimeError(f"the run in {src} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def grouped(run: dict) -> dict[str, dict[str, float]]:
    """Seconds by metric group: wall, render, encode, rest (fits and arithmetic), plus the total."""
    out: dict[str, dict[str, float]] = {}
    for row in run["phases"]:
        group = next(g for key, g in GROUPS if key in row["step"])
        acc = out.setdefault(group, dict(wall=0.0, render=0.0, encode=0.0))
        for k in ("wall", "render", "encode"):
            acc[k] += row[k]
    for acc in out.values():
        acc["rest"] = acc["wall"] - acc["render"] - acc["encode"]
    out["total"] = dict(wall=run["total"], render=sum(r["render"] for r in run["phases"]))
    out["total"]["encode"] = sum(r["encode"] for r in run["phases"])
    out["total"]["rest"] = run["total"] - out["total"]["render"] - out["total"]["encode"]
    return out


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}–{max(values):.1f}]"


def report(runs: dict[str, list[dict]]) -> str:
    """A markdown table: per metric group and checkout, wall seconds (median [min–max] over the
    rounds) and the medians of its rendering, encoding and fit seconds; the per-round ratio."""
    names = list(runs)
    per = {n: [grouped(r) for r in rs] for n, rs in runs.items()}
    groups = list(dict.fromkeys([g for _, g in GROUPS] + ["total"]))
    groups = [g for g in groups if any(g in row for rows in per.values() for row in rows)]
    head = ["metric"] + [f"{n} {k}" for n in names for k in ("wall s", "render", "encode", "fits")]
    head += ["before / after"] if len(names) == 2 else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [g]
        for n in names:
            rows = [row.get(g) for row in per[n]]
            if rows[0] is None:
                cells += ["—"] * 4
                continue
            cells.append(spread([r["wall"] for r in rows]))
            cells += [f"{statistics.median([r[k] for r in rows]):.1f}" for k in ("render", "encode", "rest")]
        if len(names) == 2:
            pairs = [(b.get(g), x.get(g)) for b, x in zip(per[names[0]], per[names[1]])]
            ratios = [b["wall"] / x["wall"] for b, x in pairs if b and x and x["wall"] > 0]
            cells.append(f"{statistics.median(ratios):.2f}× [{min(ratios):.2f}–{max(ratios):.2f}]" if ratios else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "metric values of the last round: " + ", ".join(names)]
    for k in dict.fromkeys(k for rs in runs.values() for k in rs[-1]["values"]):
        shown = "  ".join(f"{rs[-1]['values'].get(k, float('nan')):.4f}" for rs in runs.values())
        lines.append(f"  {k:<22}{shown}")
    return "\n".join(lines)


def dci_spread(a: argparse.Namespace, model: Path) -> str:
    """DCI's three numbers with gbt and hist over ``a.dci_spread`` tree seeds, on synthetic codes
    and on the fixture model's codes (``--scale`` times the shipped 10,000 / 5,000 points)."""
    import torch

    from vae_lightning.data.sprites import FACTOR_SIZES, render
    from vae_lightning.evaluation.disentanglement import model_representation, sample_factors
    from vae_lightning.evaluation.disentanglement_classifiers import dci

    torch.set_num_threads(a.threads)
    m = build_model()
    m.load_state_dict(torch.load(model))
    m.eval()
    g = torch.Generator().manual_seed(0)
    n_train, n_test = round(10_000 * a.scale), round(5_000 * a.scale)
    train, test = sample_factors(n_train, FACTOR_SIZES, g), sample_factors(n_test, FACTOR_SIZES, g)
    mix = torch.linalg.qr(torch.randn(5, 5, generator=g))[0]

    def synthetic(f):  # standardized factors, partly mixed, plus noise: an imperfect code
        z = (f.float() - f.float().mean(0)) / f.float().std(0)
        return torch.cat([0.7 * z + 0.3 * z @ mix, torch.randn(len(f), 3, generator=g)], 1)

    encode = model_representation(m, render)
    cases = {"synthetic": lambda: (synthetic(train), synthetic(test)), "model": lambda: (encode(train), encode(test))}
    cases = {k: v for k, v in cases.items() if a.dci_case in (k, "both")}
    lines = [f"DCI over {a.dci_spread} tree seeds, {n_train} / {n_test} points: median [min – max], and seconds"]
    for case, make in cases.items():
        c_train, c_test = make()
        for kind in a.dci_models.split(","):
            rows, secs = [], []
            for seed in range(a.dci_spread):
                t = time.perf_counter()
                rows.append(dci(c_train, train, c_test, test, seed=seed, model=kind))
                secs.append(time.perf_counter() - t)
            cols = [
                f"{k[:4]} {statistics.median(v):.4f} [{min(v):.4f} – {max(v):.4f}]"
                for k in rows[0]
                for v in [[r[k] for r in rows]]
            ]
            lines.append(f"  {case:<10}{kind:<5}" + "   ".join(cols) + f"   {statistics.median(secs):.1f} s")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", help="another checkout (its folder holds vae_lightning/) to time beside this one")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds (alternating which checkout goes first)")
    p.add_argument("--scale", type=float, default=0.1, help="point counts × this; 1 = the shipped defaults")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=300, help="training steps of the fixture model")
    p.add_argument("--dci-model", help="--disentanglement.dci_model for this checkout's runs (gbt, hist)")
    p.add_argument("--dci-spread", type=int, default=0, help="instead: DCI gbt vs hist over this many tree seeds")
    p.add_argument("--dci-models", default="gbt,hist", help="the DCI classifiers --dci-spread compares")
    p.add_argument("--dci-case", default="both", choices=("synthetic", "model", "both"), help="codes of --dci-spread")
    p.add_argument("--out", default=str(REPO / "runs" / "bench" / "eval.json"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a)
    work = Path(tempfile.mkdtemp(prefix="vae-bench-eval-"))
    model = REPO / "runs" / "bench" / f"eval-fixture-{a.steps}-steps.pt"  # trained once, then reused
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        train_fixture(work / "model.pt", a.steps)
        os.replace(work / "model.pt", model)
    if a.dci_spread:
        print(dci_spread(a, model))
        return None
    checkouts = {"before": Path(a.before).resolve()} if a.before else {}
    checkouts["after" if a.before else "this"] = REPO
    runs: dict[str, list[dict]] = {name: [] for name in checkouts}
    print(f"scale {a.scale} of the shipped point counts, {a.threads} threads, fixture {a.steps} steps", flush=True)
    for r in range(a.rounds):
        order = list(checkouts) if r % 2 == 0 else list(checkouts)[::-1]
        for name in order:
            dci_model = a.dci_model if checkouts[name] == REPO else None
            runs[name].append(run_once(checkouts[name], model, work / f"{name}-{r}.json", a, dci_model))
            print(f"round {r + 1}/{a.rounds} {name}: {runs[name][-1]['total']:.1f} s", flush=True)
    text = report(runs)
    print("\n" + text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"args": vars(a), "runs": runs, "report": text}, indent=1))
    print(f"\nresults: {a.out}")
    return None


if __name__ == "__main__":
    main()
