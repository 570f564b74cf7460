"""The compiled site kernels give the same spikes, and the compiled meter sums the same counts, as the eager
ones (torch.compile, C++ backend)."""

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

# the energy meter's compiled attention sums count what the eager ones count
from spiking_lm_plugin import energy
T, B, H, Hkv, L, D = 3, 2, 4, 2, 9, 8
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randint(-1, 2, (T, B, n, L, D), generator=g).float() for n in (H, Hkv, Hkv))
p = torch.randint(0, 2, (T, B, H, L, L), generator=g).float()
allowed = torch.ones(L, L, dtype=torch.bool).tril()[None, None]
counted = (torch.rand(B, L, generator=g) > 0.3, torch.ones(B, L, dtype=torch.bool))
ops = lambda: (energy.scores_op("qk", q, k, allowed, H, D, T, counted),
               energy.values_op("pv", p, v, allowed, H, D, T, counted=counted))
compiled = ops()
os.environ["SPIKING_LM_COMPILE"] = "0"
assert compiled == ops(), (compiled, ops())
assert not kernels._compile_failed, "compiled path fell back to eager"
print("ok")
"""


def test_compiled_kernel_matches_eager():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env={**os.environ, "SPIKING_LM_COMPILE": "1"})
    if "compiled spiking kernel failed" in proc.stderr or "torch.compile unavailable" in proc.stderr:
        pytest.skip("no torch.compile backend on this machine: " + proc.stderr[-500:])
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
