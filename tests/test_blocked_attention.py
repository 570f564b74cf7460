"""The softmax map computed a block of queries at a time: the same outputs, calibration samples, spikes and
energy counts as the whole map, analog and in both spiking executions (docs/DESIGN.md, "Fitting" and "Two
executions, one function")."""

from __future__ import annotations

import contextlib

import pytest
import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.calibration import record_activations
from spiking_lm_plugin.energy import EnergyMeter
from spiking_lm_plugin.model_surgery import attach, spiking_sites
from spiking_lm_plugin.modules.attention import whole_maps
from spiking_lm_plugin.modules.blocked_attention import QUERY_BLOCK, key_widths
from spiking_lm_plugin.prefix import install_prefix

from .helpers import random_windows, tiny_config, tiny_model

LENGTH = 2 * QUERY_BLOCK + 44          # three blocks, the last one short


def analog_model(arch: str = "llama", dtype=torch.float64):
    model = tiny_model(arch).to(dtype)
    attach(model)
    install_prefix(model, [3])
    model.spiking.set_mode("analog")
    return model


def test_key_widths_skip_only_what_every_row_of_a_block_masks():
    keys = LENGTH + 1                                             # a prefix key in front
    causal = torch.arange(keys)[None, :] <= torch.arange(1, keys)[:, None]
    assert key_widths(causal[None, None]) == [QUERY_BLOCK + 1, 2 * QUERY_BLOCK + 1, keys]
    padded = causal.clone()[None, None].repeat(2, 1, 1, 1)
    padded[1, 0, 5] = False                                       # one fully masked row: its block reads every key
    assert key_widths(padded) == [keys, 2 * QUERY_BLOCK + 1, keys]


@pytest.mark.parametrize("arch", ["llama", "mistral"])   # mistral: a sliding window, not a plain causal mask
def test_blocked_analog_attention_equals_the_whole_map(arch):
    model = analog_model(arch)
    windows = random_windows(256, n=2, length=LENGTH, seed=4)
    mask = torch.ones_like(windows)
    mask[1, :7] = 0                                               # a left-padded row
    with torch.no_grad():
        blocked = model(windows, attention_mask=mask).logits
        with whole_maps(model):
            whole = model(windows, attention_mask=mask).logits
    kept = mask.bool()
    assert torch.allclose(blocked[kept], whole[kept], rtol=0, atol=1e-12)


def test_calibration_samples_the_map_as_the_whole_map_would():
    """The softmax reservoirs fed from the blocks hold the values the whole map would have given them, from
    the same draws, with the same rows left out (an outlier threshold low enough to leave some out)."""
    model = analog_model()
    windows = random_windows(256, n=4, length=LENGTH, seed=5)
    names = list(spiking_sites(model))
    runs = []
    for context in (contextlib.nullcontext(), whole_maps(model)):
        with context:
            runs.append(record_activations(model, windows, names, capacity=512, batch_size=2, show_progress=False,
                                           outlier_eta=1.5))
    blocked, whole = runs
    assert blocked.outlier_tokens_left_out == whole.outlier_tokens_left_out > 0
    maps = [name for name in names if name.endswith("softmax")]
    for name in maps:
        a, b = blocked.reservoirs[name], whole.reservoirs[name]
        assert a.seen == b.seen > 0 and a.filled == b.filled == 512, name
        assert torch.equal(a.channel_ids, b.channel_ids)
        assert torch.allclose(a.values, b.values, rtol=1e-6, atol=0)     # float64 maps, float32 samples
        assert torch.allclose(a.channel_max, b.channel_max, rtol=1e-6)
    assert min(blocked.reservoirs[name].seen for name in maps) < 4 * 4 * LENGTH * (LENGTH + 1)   # rows left out


def spiking_model(arch: str):
    """Converted with the attention mass correction (row-local like the map, so it runs per block too)."""
    model = tiny_model(arch)
    slm.convert(model, tiny_config(mass_correction=True), calibration=random_windows(256), show_progress=False)
    return model.double()


def spiking_run(model, windows, mask, mode: str, metered: bool):
    meter = EnergyMeter() if metered else None
    with torch.no_grad(), model.spiking.use(mode=mode, meter=meter):
        logits = model(windows, attention_mask=mask).logits
    return logits, None if meter is None else meter.summary()


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_spiking_executions_run_blocked_as_on_the_whole_map(arch):
    """float64, a left-padded row, three blocks: fused (metered and not) and timestep give the whole map's
    logits and the same spike and AC counts (softmax site, P V coincidences); fused == timestep still holds."""
    model = spiking_model(arch)
    windows = random_windows(256, n=2, length=LENGTH, seed=4)
    mask = torch.ones_like(windows)
    mask[1, :7] = 0
    kept = mask.bool()
    runs = {}
    for mode, metered in (("fused", False), ("fused", True), ("timestep", True)):
        blocked, blocked_counts = spiking_run(model, windows, mask, mode, metered)
        with whole_maps(model):
            whole, whole_counts = spiking_run(model, windows, mask, mode, metered)
        assert torch.allclose(blocked[kept], whole[kept], rtol=0, atol=1e-12), (mode, metered)
        if metered:
            assert blocked_counts["ac"] == pytest.approx(whole_counts["ac"], rel=1e-12), mode
            softmax_rates = {k: v for k, v in blocked_counts["site_firing_rate"].items() if k.endswith("softmax")}
            assert softmax_rates and all(v > 0 for v in softmax_rates.values())
            assert softmax_rates == pytest.approx(
                {k: whole_counts["site_firing_rate"][k] for k in softmax_rates}, rel=1e-12)
        runs[mode, metered] = blocked, blocked_counts
    fused, fused_counts = runs["fused", True]
    timestep, timestep_counts = runs["timestep", True]
    assert torch.allclose(timestep[kept], fused[kept], rtol=0, atol=1e-10 * float(fused[kept].abs().max()))
    assert fused_counts["ac"] == pytest.approx(timestep_counts["ac"], rel=1e-12)
