"""A fabricated study for the report tests: task folders as `vae study run` leaves them
(task.json, starts, task.done, a tested fit's records) and recorded W&B API runs."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from vae_lightning.runtime.records import write_history, write_summary

METRICS = ("test/nll_iw", "test/elbo", "test/kl", "test/recon", "test/active_units", "test/mig")
# entry -> (model class, its init_args, the swept key, its two values)
ENTRIES = {
    "beta_vae": ("BetaVAE", {"beta": 4.0, "c_max": None, "c_steps": 100000, "gamma": 1000.0}, "beta", (1, 4)),
    "beta_tcvae": ("BetaTCVAE", {"alpha": 1.0, "beta": 6.0, "gamma": 1.0, "estimator": "mws"}, "beta", (2, 6)),
    "factor_vae": ("FactorVAE", {"gamma": 40.0, "disc_hidden": 1000}, "gamma", (10, 40)),
}
SEEDS = (0, 1, 2)


def write_task(study: Path, entry: str, value, seed: int, metrics: dict[str, float], restarts: int = 0) -> Path:
    """One task folder of `vae study run`: task.json, starts, task.done and a tested fit."""
    cls, args, key, _ = ENTRIES[entry]
    root = study / f"{entry},{key}={value},seed={seed}-{len(entry):04d}{value:04d}{seed:02d}"
    folder = root / "checkpoints" / "version_0"
    folder.mkdir(parents=True)
    point = {f"model.init_args.{key}": str(value)}
    record = {"entry": entry, "point": point, "seed": seed, "hash": root.name.rsplit("-", 1)[1]}
    (root / "task.json").write_text(json.dumps(record))
    (root / "starts").write_text("".join(f"{1000.0 + 50 * i:.3f}\n" for i in range(restarts + 1)))
    (root / "task.done").write_text("1109.500\n")  # 109.5 s after the first start
    config = {
        "seed_everything": seed,
        "trainer": {"default_root_dir": str(root), "max_steps": 300},
        "model": {"class_path": f"vae_lightning.{cls}", "init_args": {**args, key: value, "latent_dim": 6}},
        "data": {"class_path": "vae_lightning.data.SpritesDataModule", "init_args": {"seed": seed}},
        "checkpoint": {"dirpath": str(folder)},
    }
    (folder / "vae_config.yaml").write_text(yaml.safe_dump(config))
    write_history(
        folder, [{"step": st, "wall_time": st / 10, "val/elbo": -400.0 + st + seed} for st in (100, 200, 300)]
    )
    write_summary(folder, {"status": "finished", "step": 300, "wall_time": 25.6, **metrics})
    return folder


class RecordedRun:
    """A recorded ``wandb.apis.public.Run``: its attributes, and ``scan_history`` over its rows."""

    def __init__(self, record: dict):
        self.id, self.name, self.state = record["id"], record["name"], record["state"]
        self.group, self.job_type = record["group"], record["job_type"]
        self.config, self.summary, self._rows = record["config"], record["summary"], record["history"]

    def scan_history(self, keys=None):
        return [r for r in self._rows if all(k in r for k in keys or [])]
