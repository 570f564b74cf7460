"""bench/gpu.py, the script a session with a GPU runs first, at toy sizes on the CPU: every row is
produced, finite, and the compiled site kernel gives the eager kernel's spikes."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow     # the lm_eval / real-model / subprocess tier

REPO = Path(__file__).resolve().parents[1]


def test_gpu_script_runs_every_row_on_cpu(tmp_path):
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--device", "cpu", "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "gpu.json").read_text())["rows"]
    names = [r["row"] for r in rows]
    assert sum(n.startswith("convert SmolLM2") for n in names) == 2          # fp32 and bf16
    assert sum(n.startswith("forward ") for n in names) == 4                 # fused, timestep x 2 dtypes
    assert any(n.startswith("site kernel compiled") for n in names)
    assert any(n.startswith("online Hadamard 1536") for n in names)
    assert any(n.startswith("convert LLaMA-2-7B") and "344 x 32" in r["detail"] for n, r in zip(names, rows))
    assert all(math.isfinite(r["seconds"]) and r["seconds"] > 0 for r in rows)
    assert "same spikes: True" in next(r["detail"] for r in rows if r["row"].startswith("site kernel"))
    assert (tmp_path / "gpu.md").read_text().count("\n|") >= len(rows)
    assert subprocess.run(["bash", "-n", "bench/gpu.sh"], cwd=REPO).returncode == 0
