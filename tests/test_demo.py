"""The README's main command, as CI can afford it: the real SmolLM2-135M, a reduced token budget."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow     # the lm_eval / real-model / subprocess tier


def test_demo_runs_end_to_end_on_the_real_model(tmp_path):
    cmd = [str(Path(sys.executable).with_name("spiking-lm")), "demo", "--calibration-tokens", "1024",
           "--eval-docs", "1", "--out", str(tmp_path / "demo")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ANN vs spiking" in proc.stdout and "energy saving vs ANN" in proc.stdout
    summary = json.loads((tmp_path / "demo" / "results.json").read_text())
    ann, snn = summary["ann"], summary["spiking"]
    ppl_ann = ann["results"]["word_perplexity,none"]
    ppl_snn = snn["results"]["word_perplexity,none"]
    assert 1 < ppl_ann < ppl_snn < 10 * ppl_ann
    assert snn["energy"]["tokens"] == ann["energy"]["tokens"] > 0
    assert ann["energy"]["ac"] == 0 and snn["energy"]["ac"] > 0
    assert (tmp_path / "demo" / "figure4.png").stat().st_size > 10_000
    assert (tmp_path / "demo" / "checkpoint" / "neurons.safetensors").is_file()
