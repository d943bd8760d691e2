"""What produced a run's numbers: ``provenance.json`` in the run's checkpoint folder and the same
record under ``provenance`` in the W&B config.

Keys: ``config_hash`` (SHA-256 of the resolved config, first 16 hex digits), ``code_version``
(``git describe --always --dirty`` of the checkout the package was imported from, else the
installed package's version), ``versions`` (torch, lightning, torchmetrics, wandb, sklearn; None
when a package is absent), ``data`` (``class``, ``checksum_or_version``, ``split_seed``,
``binarize``), ``device``, ``precision`` and ``world_size``; ``wandb`` (id, project, group,
save_dir of the run, or None) lets ``vae test --ckpt_path`` find the fit's W&B run.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from vae_lightning.runtime.atomic import atomic_open

FILENAME = "provenance.json"
PACKAGES = {
    "torch": "torch",
    "lightning": "lightning",
    "torchmetrics": "torchmetrics",
    "wandb": "wandb",
    "sklearn": "scikit-learn",
}
#: above this many bytes a data folder's checksum covers file names and sizes, not contents
CONTENT_LIMIT = 512 * 2**20


def config_hash(config: dict) -> str:
    """SHA-256 of the config as canonical JSON (sorted keys), first 16 hex digits."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_version() -> str:
    """``git describe --always --dirty`` where the package is a git checkout, else its version."""
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        return version("vae-lightning")
    except PackageNotFoundError:
        return "unknown"


def versions() -> dict[str, str | None]:
    found = {}
    for key, dist in PACKAGES.items():
        try:
            found[key] = version(dist)
        except PackageNotFoundError:
            found[key] = None
    return found


def folder_checksum(folder: Path) -> str:
    """SHA-256 over every file under ``folder`` (relative path and bytes, in sorted order); for
    folders over ``CONTENT_LIMIT`` bytes, over paths and sizes only (prefixed ``names+sizes:``)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    by_content = sum(p.stat().st_size for p in files) <= CONTENT_LIMIT
    for path in files:
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + str(path.stat().st_size).encode())
        if by_content:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(2**20), b""):
                    digest.update(block)
    return ("sha256:" if by_content else "names+sizes:") + digest.hexdigest()[:16]


def data_folder(datamodule) -> Path | None:
    """The folder of the data module's files (torchvision's layout), or None (generated data)."""
    data_dir = getattr(datamodule, "data_dir", None)
    if data_dir is None:
        return None
    cls = getattr(datamodule, "dataset_cls", None)
    sub = (getattr(cls, "base_folder", None) or cls.__name__) if cls is not None else ""
    path = Path(data_dir) / sub
    return path if path.is_dir() else Path(data_dir)


def data_identity(datamodule) -> dict[str, Any]:
    from vae_lightning.data.sprites import GENERATOR_VERSION, SpritesDataModule

    cls = type(datamodule)
    if isinstance(datamodule, SpritesDataModule):
        ident = f"sprites-generator-v{GENERATOR_VERSION}"
    else:
        path = data_folder(datamodule)
        ident = folder_checksum(path) if path is not None and path.is_dir() else None
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "checksum_or_version": ident,
        "split_seed": getattr(datamodule, "split_seed", None),
        "binarize": getattr(datamodule, "binarize", None),
    }


def record(config: dict, trainer, datamodule, wandb: dict | None = None) -> dict[str, Any]:
    """The provenance of a run about to start (``config``: the resolved config as plain values)."""
    return {
        "config_hash": config_hash(config),
        "code_version": code_version(),
        "versions": versions(),
        "data": data_identity(datamodule) if datamodule is not None else None,
        "device": str(trainer.strategy.root_device),
        "precision": str(trainer.precision),
        "world_size": trainer.world_size,
        "wandb": wandb,
    }


def write(folder: Path, prov: dict) -> Path:
    path = Path(folder) / FILENAME
    with atomic_open(path, "w") as f:
        json.dump(prov, f, indent=2)
        f.write("\n")
    return path


def read(folder: Path) -> dict | None:
    path = Path(folder) / FILENAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
