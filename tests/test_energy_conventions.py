"""The paper's accounting beside ours: the LLaMA-3-8B ANN rows of Tables 3 and 14 from its config alone,
the weight-free count equal to a real forward's, full-rectangle statistics against brute force."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin import energy
from spiking_lm_plugin.baseline_energy import ann_baseline
from spiking_lm_plugin.energy import EnergyConstants, EnergyMeter

from .helpers import random_windows, tiny_config, tiny_model

LLAMA3_8B = Path(__file__).parent / "data" / "llama3_8b_config.json"
CLI = [sys.executable, "-m", "spiking_lm_plugin.cli"]


def test_the_paper_convention_reproduces_llama3_8b_tables_3_and_14():
    """Table 3: ANN 3912.08 G MACs, 18.00 J; Table 14: ANN read/write 38.47 J (one 512-token sample)."""
    proc = subprocess.run(CLI + ["energy", "--model", str(LLAMA3_8B), "--tokens", "512", "--convention", "paper",
                                 "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["mac_g"] == pytest.approx(3912.08, rel=0.01)
    assert report["energy_j"] == pytest.approx(18.00, rel=0.01)
    assert report["read_write_j"] == pytest.approx(38.47, rel=0.01)
    ours = ann_baseline(str(LLAMA3_8B), 512, "ours")
    assert ours["by_kind_mac_g"]["qk"] < report["by_kind_mac_g"]["qk"]     # causal pairs vs the rectangle


@pytest.mark.parametrize("convention", ["ours", "paper"])
def test_the_weight_free_count_equals_a_real_forward(convention):
    model = tiny_model()
    slm.prepare(model, tiny_config(rotation="none"))
    meter = EnergyMeter(EnergyConstants(read_write=True), cost_model=energy.cost_model(convention))
    with torch.no_grad(), model.spiking.use(mode="ann", meter=meter):
        model(random_windows(256, n=1, length=24))
    counted = ann_baseline(tiny_model().config, 24, convention)
    assert counted["by_kind_mac_g"] == pytest.approx({k: v["mac"] / 1e9 for k, v in meter.summary()["by_kind"].items()})
    assert counted["read_write_j"] == pytest.approx(meter.summary()["read_write_j"])


def test_full_rectangle_statistics_match_brute_force():
    """The paper convention ignores the causal mask: every query meets every key."""
    gen = torch.Generator().manual_seed(0)
    T, B, H, Hkv, L, D = 3, 2, 4, 2, 5, 3
    q = (torch.rand(T, B, H, L, D, generator=gen) < 0.4).float()
    k = (torch.rand(T, B, Hkv, L, D, generator=gen) < 0.4).float()
    v = (torch.rand(T, B, Hkv, L, D, generator=gen) < 0.4).float()
    allowed = torch.tril(torch.ones(L, L, dtype=torch.bool)).view(1, 1, L, L)
    p = (torch.rand(T, B, H, L, L, generator=gen) < 0.5).float() * allowed
    kv = lambda h: h // (H // Hkv)  # noqa: E731
    qk_ac = pv_ac = 0.0
    for t, b, h, row, s in itertools.product(range(T), range(B), range(H), range(L), range(L)):
        for d in range(D):
            qk_ac += q[t, b, h, row, d] + k[t, b, kv(h), s, d] + q[t, b, h, row, d] * k[t, b, kv(h), s, d]
            pv_ac += p[t, b, h, row, s] + v[t, b, kv(h), s, d] + p[t, b, h, row, s] * v[t, b, kv(h), s, d]
    paper = energy.PaperCostModel()
    scores = paper.cost(energy.scores_op("qk", q, k, allowed, heads=H, head_dim=D, timesteps=T).counts())
    values = paper.cost(energy.values_op("pv", p, v, allowed, heads=H, head_dim=D, timesteps=T).counts())
    assert scores.ac == pytest.approx(float(qk_ac)) and values.ac == pytest.approx(float(pv_ac))
    assert scores.ann_mac == values.ann_mac == B * H * L * L * D


def test_softmax_and_its_site_count_the_allowed_entries_only():
    model = tiny_model()
    slm.convert(model, tiny_config(), calibration=random_windows(256), show_progress=False)
    meter = EnergyMeter()
    with torch.no_grad(), model.spiking.use(mode="fused", meter=meter):
        model(random_windows(256, n=1, length=10))
    heads, layers, prefix = model.config.num_attention_heads, model.config.num_hidden_layers, len(model.spiking.prefix or [])
    allowed = sum(prefix + i + 1 for i in range(10)) * heads         # each query sees the prefix and the past
    assert meter.by_kind["softmax"][0] == energy.NONLINEAR_MACS["softmax"] * allowed * layers
    assert meter.sites["layers.0.softmax"].slots == allowed * 8


def test_neuron_energy_and_the_masks_second_update_are_priced():
    event = energy.SiteFired("layers.0.up", True, spikes=3.0, slots=16.0)
    assert energy.CostModel().cost(event).neuron_steps == 32
    assert energy.CostModel().cost(energy.SiteFired("layers.0.up", False, 3.0, 16.0)).neuron_steps == 16
    meter = EnergyMeter(EnergyConstants(read_write=False), cost_model=energy.PaperCostModel())
    meter.emit(event)
    assert meter.energy_j() == 0.0                       # eq. 18 has no neuron term; eq. 59/60 do
    meter.constants = EnergyConstants(read_write=True)
    assert meter.summary()["neuron_j"] == pytest.approx(32 * 1.8e-12)


def test_the_energy_command_refuses_a_missing_config_with_one_line(tmp_path):
    proc = subprocess.run(CLI + ["energy", "--model", str(tmp_path / "nowhere" / "config.json")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "no such file" in proc.stderr
