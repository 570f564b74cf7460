"""A T per site type (``SpikingConfig.site_timesteps``): each T group fitted as the uniform fit would fit it,
both executions the same function (float64), the checkpoint round trip, the meter's steps per site, the
command line and ``spiking-hf``."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.checkpoint_files import CONFIG_FILE, CheckpointError
from spiking_lm_plugin.conversion import calibrate, fit
from spiking_lm_plugin.energy import EnergyMeter
from spiking_lm_plugin.model_surgery import spiking_sites
from spiking_lm_plugin.sites import site_type

from .helpers import random_windows, tiny_config, tiny_model

VOCAB = 256
#: q/k, softmax/v and gate/up each meet at a product with different T; head_in goes below T
STEPS = {"q": 5, "softmax": 8, "v": 4, "gate_act": 9, "head_in": 3}


def convert_mixed(dtype=torch.float32, **overrides):
    model = tiny_model(vocab_size=VOCAB).to(dtype)
    state = slm.convert(model, tiny_config(timesteps=6, site_timesteps=STEPS, prefix="none", **overrides),
                        calibration=random_windows(VOCAB), base_model="tiny", show_progress=False)
    return model, state


def logits(model, mode: str, meter=None) -> torch.Tensor:
    with torch.no_grad(), model.spiking.use(mode=mode, meter=meter):
        return model(random_windows(VOCAB, 2, 24, seed=7)).logits


@pytest.mark.smoke
def test_mixed_timesteps_run_both_executions_alike_in_float64():
    model, state = convert_mixed(torch.float64)
    for name, site in spiking_sites(model).items():
        assert site.timesteps == STEPS.get(site_type(name), 6), name
    assert state.neurons["timesteps"].tolist() == [STEPS.get(site_type(n), 6) for n in state.site_names]
    meters = {mode: EnergyMeter() for mode in ("fused", "timestep")}
    fused, timestep = logits(model, "fused", meters["fused"]), logits(model, "timestep", meters["timestep"])
    assert (fused - timestep).abs().max() < 1e-10
    assert not torch.allclose(fused, logits(model, "analog"))
    a, b = meters["fused"].summary(), meters["timestep"].summary()
    assert a["ac"] == pytest.approx(b["ac"], rel=1e-9) and a["mac"] == pytest.approx(b["mac"], rel=1e-9)
    sites = meters["fused"].sites           # slots = elements x T: gate_act and up code the same elements
    assert sites["layers.0.gate_act"].slots / sites["layers.0.up"].slots == pytest.approx(9 / 6)
    heads = model.config.num_attention_heads / model.config.num_key_value_heads   # q codes this many more values
    assert sites["layers.0.q"].slots / sites["layers.0.k"].slots == pytest.approx(heads * 5 / 6)

def test_each_timestep_group_is_fitted_as_the_uniform_fit_fits_it():
    model = tiny_model(vocab_size=VOCAB)
    config = tiny_config(timesteps=6, site_timesteps={"softmax": 8, "gate_act": 8}, prefix="none")
    calib = calibrate(model, config, random_windows(VOCAB), show_progress=False)
    mixed = fit(calib.samples, config, False, calib.site_names).export()
    uniform = fit(calib.samples, tiny_config(timesteps=6, prefix="none"), False, calib.site_names).bank.export()
    six = [i for i, n in enumerate(calib.site_names) if site_type(n) not in ("softmax", "gate_act")]
    assert torch.allclose(mixed["theta"][six, :6], uniform["theta"][six], rtol=1e-5, atol=1e-7)
    assert torch.equal(mixed["d"][six, 6:], torch.zeros(len(six), 2))      # padding past a site's T
    eight = [i for i, n in enumerate(calib.site_names) if site_type(n) == "softmax"]
    alone = fit(calib.samples[eight], tiny_config(timesteps=8, prefix="none"), False).bank.export()
    assert torch.allclose(mixed["theta"][eight], alone["theta"], rtol=1e-5, atol=1e-7)


@pytest.mark.smoke
def test_mixed_checkpoint_round_trip_and_a_tampered_recipe_is_refused(tmp_path):
    model, _ = convert_mixed()
    slm.save(model, tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    assert meta["config"]["site_timesteps"] == STEPS
    fresh = tiny_model(vocab_size=VOCAB)
    slm.load(fresh, tmp_path / "ckpt")
    for mode in ("fused", "timestep"):
        assert torch.equal(logits(model, mode), logits(fresh, mode)), mode
    meta["config"]["site_timesteps"] = {**STEPS, "softmax": 7}
    (tmp_path / "ckpt" / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"softmax has 8 steps but the recipe .* gives it T=7"):
        slm.load(tiny_model(vocab_size=VOCAB), tmp_path / "ckpt")


def test_bad_site_timesteps_are_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown site types"):
        slm.SpikingConfig(site_timesteps={"attention": 8})
    with pytest.raises(ValueError, match=r"site_timesteps\['softmax'\] must be an integer T >= 1"):
        slm.SpikingConfig(site_timesteps={"softmax": 0})
    assert slm.SpikingConfig(timesteps=6, site_timesteps={"softmax": 6}).site_timesteps is None
    from lightning_modules.module import NeuronFitModule
    with pytest.raises(ValueError, match="the Lightning trainer fits one T"):
        NeuronFitModule(slm.SpikingConfig(site_timesteps={"softmax": 10}))


@pytest.mark.slow
def test_convert_command_and_spiking_hf_with_site_timesteps(tmp_path, tiny_model_dir):
    from .test_lm_eval import lm_eval

    out = tmp_path / "mixed"
    proc = subprocess.run([str(Path(sys.executable).parent / "spiking-lm"), "convert", "--model", str(tiny_model_dir),
                           "--out", str(out), "-T", "5", "--site-timesteps", "softmax=7,gate_act=7",
                           "--calibration-tokens", "1024", "--sequence-length", "128", "--samples-per-site", "2048",
                           "--rounds", "1", "--threshold-steps", "4", "--base-steps", "2", "--quiet"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / CONFIG_FILE).read_text())["config"]["site_timesteps"] == {"softmax": 7, "gate_act": 7}
    runs = {}
    for mode in ("fused", "timestep"):
        runs[mode], p = lm_eval(tmp_path, "spiking-hf", f"pretrained={tiny_model_dir},spiking={out},mode={mode}",
                                "spiking_enwiki_ppl_short")
        assert p.returncode == 0, p.stderr[-3000:]
    ppl = {m: r["results"]["spiking_enwiki_ppl_short"]["word_perplexity,none"] for m, r in runs.items()}
    assert ppl["fused"] == pytest.approx(ppl["timestep"], rel=1e-3) and ppl["fused"] > 1
    bad = subprocess.run([str(Path(sys.executable).parent / "spiking-lm"), "convert", "--model", "x", "--out",
                          str(tmp_path / "o"), "--site-timesteps", "softmax:8"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--site-timesteps must be comma-separated TYPE=T pairs" in bad.stderr
