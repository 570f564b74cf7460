"""The attention mass correction (``SpikingConfig.mass_correction``): the lost row mass given back over the
allowed keys, in both executions alike, priced by the meter and absent from the ANN baseline."""

import pytest
import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.energy import EnergyMeter
from spiking_lm_plugin.energy.events import NonlinearOp
from spiking_lm_plugin.modules.attention import grouped_matmul
from spiking_lm_plugin.modules.attention_mass import lost_mass_term, mean_allowed_values

from .helpers import random_windows, tiny_config, tiny_model

VOCAB = 256


def brute_force_mean(v, allowed, heads):
    groups = heads // v.shape[1]
    b, _, l, s = allowed.shape
    out = torch.zeros(b, heads, l, v.shape[-1], dtype=v.dtype)
    for bi in range(b):
        for h in range(heads):
            for i in range(l):
                keys = allowed[bi, h if allowed.shape[1] > 1 else 0, i]
                if keys.any():
                    out[bi, h, i] = v[bi, h // groups, keys].mean(0)
    return out


@pytest.mark.parametrize("per_head", [False, True])
def test_mean_over_allowed_keys_matches_a_brute_force_mean(per_head):
    torch.manual_seed(0)
    v = torch.randn(2, 2, 7, 3, dtype=torch.float64)
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    allowed = causal.expand(2, 1, 7, 7).clone()
    allowed[1, :, :, :2] = False                      # left padding of the second sequence
    if per_head:                                      # a per-head mask: not one interval per row
        allowed = allowed.expand(2, 4, 7, 7).clone()
        allowed[:, 1, :, 3] = False
    pv = lambda a, b: grouped_matmul(a, b, 2)  # noqa: E731
    mean = mean_allowed_values(v, allowed, 4, pv)
    assert torch.allclose(mean, brute_force_mean(v, allowed, 4), atol=1e-12)
    p = torch.rand(2, 4, 7, 7, dtype=torch.float64) * allowed / 7
    term = lost_mass_term(p, mean)
    assert torch.allclose(term, (1 - p.sum(-1, keepdim=True)) * mean, atol=1e-12)


def convert_tiny(dtype, **overrides):
    model = tiny_model(vocab_size=VOCAB).to(dtype)
    slm.convert(model, tiny_config(timesteps=4, prefix="none", **overrides), calibration=random_windows(VOCAB),
                base_model="tiny", show_progress=False)
    return model


def run(model, mode, meter=None):
    with torch.no_grad(), model.spiking.use(mode=mode, meter=meter):
        return model(random_windows(VOCAB, 2, 24, seed=7)).logits


@pytest.mark.smoke
def test_correction_runs_both_executions_alike_and_is_metered_as_spiking_only():
    model = convert_tiny(torch.float64, mass_correction=True)
    meters = {m: EnergyMeter() for m in ("fused", "timestep")}
    fused, timestep = run(model, "fused", meters["fused"]), run(model, "timestep", meters["timestep"])
    assert (fused - timestep).abs().max() < 1e-10
    model.spiking.mass_correction = False
    plain_meter = EnergyMeter()
    plain = run(model, "fused", plain_meter)
    assert not torch.allclose(fused, plain)                # the correction changes the output
    added = meters["fused"].total.mac - plain_meter.total.mac
    corrections = [e for e in meters["fused"].events.values()
                   if isinstance(e, NonlinearOp) and e.kind == "mass_correction"]
    outputs = 2 * 24 * model.config.num_attention_heads * (model.config.hidden_size // model.config.num_attention_heads)
    assert len(corrections) == model.config.num_hidden_layers
    assert all(float(e.numel) == outputs for e in corrections) and added == pytest.approx(4 * outputs * 2)
    assert meters["fused"].total.ann_mac == plain_meter.total.ann_mac   # the ANN does not pay for it
    analog_off = run(model, "analog")
    model.spiking.mass_correction = True
    assert torch.equal(run(model, "analog"), analog_off)     # analog sites: no spiked row, nothing to correct


def test_the_recipe_carries_the_correction_through_a_checkpoint(tmp_path):
    model = convert_tiny(torch.float32, mass_correction=True)
    slm.save(model, tmp_path / "ckpt")
    fresh = tiny_model(vocab_size=VOCAB)
    slm.load(fresh, tmp_path / "ckpt")
    assert fresh.spiking.mass_correction and torch.equal(run(model, "fused"), run(fresh, "fused"))
