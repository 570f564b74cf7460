"""Honest checks on the real SmolLM2-135M (offline asset), cut to its first two decoder layers."""

import math

import pytest
import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.assets import text_documents
from spiking_lm_plugin.calibration import token_windows
from spiking_lm_plugin.energy import EnergyMeter
from spiking_lm_plugin.sites import site_type

from .helpers import FAST_FIT

pytestmark = pytest.mark.slow     # the lm_eval / real-model / subprocess tier


def test_smollm2_asset_loads_and_has_finite_perplexity(smollm2_path, smollm2_tokenizer):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()
    assert isinstance(model, LlamaForCausalLM) and model.config.num_hidden_layers == 30
    ids = token_windows(smollm2_tokenizer, [d["text"] for d in text_documents("enwiki-excerpt", "evaluation")],
                        256, 256)
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    assert math.isfinite(float(loss)) and 1 < math.exp(float(loss)) < 200


@pytest.fixture(scope="module")
def converted_two_layers(smollm2_two_layers, smollm2_tokenizer):
    model = smollm2_two_layers
    state = slm.convert(model, slm.SpikingConfig(timesteps=8, calibration_tokens=2048, sequence_length=256,
                                                 samples_per_site=4096, fit=FAST_FIT),
                        tokenizer=smollm2_tokenizer, show_progress=False)
    return model, state


def test_fitted_neurons_beat_binary_on_real_activations(converted_two_layers):
    _, state = converted_two_layers
    ours, binary = torch.tensor(state.fit["site_loss"]), torch.tensor(state.fit["site_loss_binary"])
    assert float(ours.mean()) < 0.8 * float(binary.mean())
    assert float((ours < binary).float().mean()) >= 0.9
    assert {site_type(n) for n in state.site_names} == set(slm.SpikingConfig().sites)


def test_fused_equals_timestep_on_real_layers(converted_two_layers, smollm2_tokenizer):
    """float64: the same function (1e-10). float32: the fused op and the time-stepped accumulation round
    differently (~40 ulp over a 1536-term sum), so a handful of the ~10^6 firing decisions flip and the
    flips propagate downstream; we bound spike disagreement per site (< 1%) and the logit difference (< 1%)."""
    model, _ = converted_two_layers
    ids = token_windows(smollm2_tokenizer, [d["text"] for d in text_documents("enwiki-excerpt", "evaluation")],
                        48, 48)
    logits, counts, spikes = {}, {}, {}
    for mode in ("fused", "timestep"):
        slm.set_mode(model, mode)
        model.spiking.meter = meter = EnergyMeter()
        with torch.no_grad():
            logits[mode] = model(ids).logits
        counts[mode] = meter.summary()
        spikes[mode] = {k: v.spikes for k, v in meter.sites.items()}
    diff = float((logits["fused"] - logits["timestep"]).norm() / logits["fused"].norm())
    assert diff <= 1e-2, diff
    for site, n in spikes["fused"].items():
        assert abs(n - spikes["timestep"][site]) <= 1e-2 * n, site
    assert abs(counts["fused"]["ac"] - counts["timestep"]["ac"]) <= 1e-2 * counts["fused"]["ac"]
    assert counts["fused"]["mac"] == counts["timestep"]["mac"]
    model.double()
    for mode in ("fused", "timestep"):
        slm.set_mode(model, mode)
        with torch.no_grad():
            logits[mode] = model(ids).logits
    model.float()
    assert float((logits["fused"] - logits["timestep"]).abs().max() / logits["fused"].abs().max()) <= 1e-10
