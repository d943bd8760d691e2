"""``python -m bench.gpu --dry-run``: the GPU benchmark's code runs on the CPU at tiny sizes and
writes one table with a row per setting and the ELBO of every precision."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from helpers import REPO


@pytest.mark.slow
def test_gpu_bench_dry_run_prints_and_appends_one_table(tmp_path):
    doc, out = tmp_path / "benchmarks.md", tmp_path / "gpu.json"
    doc.write_text("# Benchmarks\n")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--dry-run", "--doc", str(doc), "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    settings = {(r["precision"], r["channels_last"], r["compile"]) for r in result["rows"]}
    assert len(result["rows"]) == len(settings) == 4  # fp32 and bf16 × channels_last on/off, one tiny batch size
    assert all(
        r["fit"] > 0 and r["bare"] > 0 and r["ratio"] == pytest.approx(r["fit"] / r["bare"]) for r in result["rows"]
    )
    assert set(result["elbo"]) == {"32-true", "bf16-mixed"}  # 16-mixed needs a GPU
    assert all(math.isfinite(v) and v < 0 for v in result["elbo"].values())  # log-likelihood bound of binary images
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n") and text.count("\n| 8 | ") == 4 and "CPU dry run" in text
    assert text.split("# Benchmarks\n", 1)[1].strip() in proc.stdout  # the printed table is the appended one
