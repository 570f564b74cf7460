"""The compiled site kernel gives the same spikes as the eager one (torch.compile, C++ backend)."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow     # a subprocess that compiles the kernels

SCRIPT = r"""
import os, torch
os.environ["SPIKING_LM_COMPILE"] = "1"
from spiking_lm_plugin.neurons import kernels, NeuronBank, NeuronSpec
bank = NeuronBank(NeuronSpec.preset("multi-grain", 8), 1)
with torch.no_grad():
    bank.theta_rel.mul_(torch.linspace(0.7, 1.3, 8))
e = bank.export()
x = torch.randn(3, 17, 40) * 2
tau = torch.rand(40) + 0.5
args = (x, tau, e["theta"][0], e["h"][0], e["d"][0], e["v0"][0])
eager = kernels._site_code(kernels._as_rows(x), tau, *args[2:], 2, 0)
value, events = kernels.site_code(*args)
value2, frames, events2 = kernels.site_frames(*args)
assert not kernels._compile_failed, "compiled path fell back to eager"
assert torch.allclose(value, eager[0].view(x.shape), rtol=0, atol=1e-6)
assert int(events) == int(eager[1]) == int(events2) == int(frames.abs().sum())
print("ok")
"""


def test_compiled_kernel_matches_eager():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env={**os.environ, "SPIKING_LM_COMPILE": "1"})
    if "compiled spiking kernel failed" in proc.stderr or "torch.compile unavailable" in proc.stderr:
        pytest.skip("no torch.compile backend on this machine: " + proc.stderr[-500:])
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
