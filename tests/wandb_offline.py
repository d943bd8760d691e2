"""Read W&B offline runs without a network: the records of ``run-<id>.wandb`` files (W&B's
datastore log: a 7-byte file header, then 32 KiB blocks of records, each a 7-byte header of CRC
(4), length (2, little-endian) and type (1: full, 2: first, 3: middle, 4: last) and a slice of
one protobuf ``Record``). A requeued run leaves several ``offline-run-*`` folders with one id:
``merged`` reads them all, oldest first."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def records(path: Path) -> Iterator:
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf = path.read_bytes(), HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        buf, pos = buf + data[pos + HEADER : pos + HEADER + length], pos + HEADER + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def merged(wandb_dir: Path) -> dict:
    """All offline runs under ``wandb_dir``: ``ids`` (set), ``runs`` (the run records),
    ``config`` (key -> value, later updates win), ``summary`` (the same), ``history`` (list of
    {key: value})."""
    out: dict = {"ids": set(), "runs": [], "config": {}, "summary": {}, "history": [], "folders": []}
    for folder in sorted(wandb_dir.glob("offline-run-*")):
        out["folders"].append(folder)
        for record in records(next(folder.glob("run-*.wandb"))):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                out["ids"].add(record.run.run_id)
                out["runs"].append(record.run)
            elif kind == "config":
                out["config"].update({_key(i): json.loads(i.value_json) for i in record.config.update if _key(i)})
            elif kind == "summary":
                for item in record.summary.update:
                    *path, last = list(item.nested_key) or [item.key]
                    target = out["summary"]
                    for key in path:
                        target = target.setdefault(key, {})
                    target[last] = json.loads(item.value_json)
            elif kind == "history":
                out["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
    return out


def api_run(wandb_dir: Path) -> dict:
    """The offline run under ``wandb_dir`` as ``wandb.apis.public.Run`` would show it once synced
    (the keys of ``tests/fixtures/wandb_study.json``): id, name, state, group, job_type, config,
    summary and the history rows."""
    run = merged(wandb_dir)
    first = run["runs"][-1]
    return {
        "id": first.run_id,
        "name": first.display_name,
        "state": "finished",
        "group": first.run_group,
        "job_type": first.job_type,
        "config": {k: v for k, v in run["config"].items() if k != "_wandb"},
        "summary": run["summary"],
        "history": run["history"],
    }
