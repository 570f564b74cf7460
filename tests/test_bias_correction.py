"""Bias correction (``SpikingConfig.bias_correction``): the linear-feeding sites give their mean coding error
back, both executions stay the same function (float64), the meter prices the bias, the checkpoint round
trip keeps the offsets, the reference modes never see them, and the real model's error shrinks."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import spiking_lm_plugin as slm
from spiking_lm_plugin.bias_correction import CORRECTION_WINDOWS
from spiking_lm_plugin.checkpoint_files import CONFIG_FILE, TENSORS_FILE, CheckpointError
from spiking_lm_plugin.energy import EnergyMeter
from spiking_lm_plugin.energy.events import LinearOp
from spiking_lm_plugin.model_surgery import spiking_sites
from spiking_lm_plugin.sites import LINEAR_INPUT_SITE_TYPES, site_type

from .helpers import random_windows, tiny_config, tiny_model

VOCAB = 256


def convert(dtype=torch.float32, correct=True, timesteps=4):
    model = tiny_model(vocab_size=VOCAB).to(dtype)
    state = slm.convert(model, tiny_config(timesteps=timesteps, prefix="none", bias_correction=correct),
                        calibration=random_windows(VOCAB), base_model="tiny", show_progress=False)
    return model, state


def logits(model, mode: str, meter=None, windows=None) -> torch.Tensor:
    with torch.no_grad(), model.spiking.use(mode=mode, meter=meter):
        return model(random_windows(VOCAB, 2, 24, seed=7) if windows is None else windows).logits


def mean_errors(model, windows) -> dict[str, torch.Tensor]:
    """Per-channel mean of (what the site sends) - (its input) over ``windows``, fused."""
    sites = spiking_sites(model)
    out = {}
    hooks = [site.register_forward_hook(lambda m, a, o, n=name: out.__setitem__(
        n, (o.value - a[0]).reshape(-1, a[0].shape[-1]).double().mean(0)))
        for name, site in sites.items() if site_type(name) in LINEAR_INPUT_SITE_TYPES]
    try:
        logits(model, "fused", windows=windows)
    finally:
        for h in hooks:
            h.remove()
    return out


@pytest.mark.smoke
def test_offsets_cancel_the_mean_coding_error_and_both_executions_agree_in_float64():
    model, state = convert(torch.float64)
    linear_fed = [n for n in state.site_names if site_type(n) in LINEAR_INPUT_SITE_TYPES]
    assert sorted(state.offsets) == sorted(linear_fed)
    assert all(site_type(n) not in LINEAR_INPUT_SITE_TYPES for n in set(state.site_names) - set(state.offsets))
    # on the windows they were measured on, every corrected site's mean error is gone (network order: the
    # later sites' inputs already carry the earlier corrections); without the offsets it is not
    windows = random_windows(VOCAB)[:CORRECTION_WINDOWS]
    after = mean_errors(model, windows)
    for name in linear_fed:
        assert after[name].abs().max() < 1e-9, name
    sites = spiking_sites(model)
    for name in linear_fed:
        sites[name].set_offset(None)
    before = mean_errors(model, windows)
    assert max(float(before[n].abs().max()) for n in linear_fed) > 1e-4
    slm.install(model, state)
    meters = {mode: EnergyMeter() for mode in ("fused", "timestep")}
    fused, timestep = logits(model, "fused", meters["fused"]), logits(model, "timestep", meters["timestep"])
    assert (fused - timestep).abs().max() < 1e-10
    a, b = meters["fused"].summary(), meters["timestep"].summary()
    assert a["ac"] == pytest.approx(b["ac"], rel=1e-9)


def test_reference_modes_ignore_the_offsets_and_the_meter_prices_the_bias():
    corrected, _ = convert(correct=True)
    plain, _ = convert(correct=False)
    for mode in ("ann", "analog"):
        assert torch.equal(logits(corrected, mode), logits(plain, mode)), mode
    assert not torch.allclose(logits(corrected, "fused"), logits(plain, "fused"))
    meters = {"on": EnergyMeter(), "off": EnergyMeter()}
    logits(corrected, "fused", meters["on"])
    logits(plain, "fused", meters["off"])
    # every layer fed by a corrected site adds one bias per output and token, priced like a model's own bias
    linears = {k: [e for e in m.events.values() if isinstance(e, LinearOp)] for k, m in meters.items()}
    assert linears["on"] and all(e.bias for e in linears["on"])
    assert not any(e.bias for e in linears["off"])


@pytest.mark.smoke
def test_checkpoint_round_trip_keeps_the_offsets(tmp_path):
    model, state = convert()
    slm.save(model, tmp_path / "ckpt")
    fresh = tiny_model(vocab_size=VOCAB)
    loaded = slm.load(fresh, tmp_path / "ckpt")
    assert loaded.config.bias_correction and sorted(loaded.offsets) == sorted(state.offsets)
    for mode in ("fused", "timestep"):
        assert torch.equal(logits(model, mode), logits(fresh, mode)), mode
    # a bias-corrected recipe whose tensors lost their offsets is refused, not run uncorrected
    tensors = load_file(str(tmp_path / "ckpt" / TENSORS_FILE))
    save_file({k: v for k, v in tensors.items() if not k.startswith("offset.")}, str(tmp_path / "ckpt" / TENSORS_FILE))
    meta = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    meta.pop("tensors", None)          # the digest would name the edit first
    (tmp_path / "ckpt" / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="has no bias offsets"):
        slm.load(tiny_model(vocab_size=VOCAB), tmp_path / "ckpt")


def test_the_trainer_refuses_bias_correction_in_one_line():
    from lightning_modules.module import NeuronFitModule
    with pytest.raises(ValueError, match="use `spiking-lm convert`"):
        NeuronFitModule(slm.SpikingConfig(bias_correction=True))
