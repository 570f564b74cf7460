"""``spiking-lm report``: the real CLI writes a PNG of where the spikes go and prints the energy table."""

import subprocess
import sys

import pytest
import torch

from spiking_lm_plugin.energy import EnergyMeter, LinearOp, SiteFired
from spiking_lm_plugin.report import maps

CLI = [sys.executable, "-m", "spiking_lm_plugin.cli"]


def test_the_maps_place_each_site_and_op_in_its_layer():
    meter = EnergyMeter()
    meter.emit(SiteFired("layers.1.up", False, 3.0, 12.0, layer=1))
    meter.emit(SiteFired("head_in", False, 1.0, 4.0))
    meter.emit(LinearOp("down_proj", 4, 2, False, 2, tokens=1, spikes=3.0, layer=1))
    meter.emit(LinearOp("lm_head", 4, 2, False, 2, tokens=1, spikes=1.0))
    data = maps(meter, layers=2)
    assert data["rates"][1, data["site_types"].index("up")] == 0.25
    assert data["rates"][2, data["site_types"].index("head_in")] == 0.25
    assert torch.isnan(data["rates"][0]).all()
    share = data["ac_share"]
    assert share[1, data["ops"].index("down_proj")] == pytest.approx(0.75)
    assert share[2, data["ops"].index("lm_head")] == pytest.approx(0.25)


@pytest.mark.slow
def test_the_report_command_writes_a_png_and_the_table(tmp_path, tiny_model_dir, tiny_checkpoint):
    out = tmp_path / "figures" / "report.png"
    proc = subprocess.run(CLI + ["report", str(tiny_checkpoint), "--model", str(tiny_model_dir), "--out", str(out),
                                 "--tokens", "64", "--spike-mask", "2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "read/write (mJ)" in proc.stdout
    assert not list(out.parent.glob("*.png.tmp*")) and len(list(out.parent.iterdir())) == 1
    bad = subprocess.run(CLI + ["report", str(tmp_path / "missing"), "--model", str(tiny_model_dir)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
