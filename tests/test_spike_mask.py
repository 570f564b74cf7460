"""The early-spike mask (paper Appendix D.7): every neuron but the softmax map's keeps its first k spikes;
both executions agree with it, the energy counts follow the spikes kept, one checkpoint runs with and
without it."""

import argparse

import pytest
import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.energy import EnergyMeter
from spiking_lm_plugin.model_surgery import spiking_sites

from .helpers import random_windows, tiny_config, tiny_model


@pytest.fixture(scope="module")
def masked_model():
    model = tiny_model()
    slm.convert(model, tiny_config(spike_mask=2), calibration=random_windows(256), show_progress=False)
    return model.double()


def _metered(model, mode: str, mask: int | None, ids):
    model.spiking.spike_mask = mask
    meter = EnergyMeter()
    with torch.no_grad(), model.spiking.use(mode=mode, meter=meter):
        logits = model(ids).logits
    return logits, meter


def test_the_recipe_installs_the_mask_and_both_executions_agree(masked_model):
    assert masked_model.spiking.spike_mask == 2
    ids = random_windows(256, n=2, length=12, seed=7)
    fused, fused_meter = _metered(masked_model, "fused", 2, ids)
    timestep, timestep_meter = _metered(masked_model, "timestep", 2, ids)
    torch.testing.assert_close(timestep, fused, rtol=1e-9, atol=1e-9)
    assert timestep_meter.by_kind == fused_meter.by_kind
    _, unmasked = _metered(masked_model, "fused", None, ids)
    for name, stats in fused_meter.sites.items():
        if not name.endswith("softmax"):
            assert stats.spikes <= 2 * stats.slots / 8          # at most k of the T steps per value
    assert sum(s.spikes for s in fused_meter.sites.values()) < sum(s.spikes for s in unmasked.sites.values())
    assert fused_meter.ac < unmasked.ac


def test_no_value_keeps_more_than_k_spikes_but_the_softmax_map_is_exempt(masked_model):
    sites = spiking_sites(masked_model)
    most = {}
    for k in (1, None):
        masked_model.spiking.spike_mask = k
        with masked_model.spiking.use(mode="timestep"):
            for name in ("layers.0.up", "layers.0.softmax"):
                site = sites[name]
                x = torch.rand(256, site.channels, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
                most[name, k] = int(site(x * site.tau.double()).frames.ne(0).sum(0).max())
    masked_model.spiking.spike_mask = 2
    assert most["layers.0.up", 1] == 1 < most["layers.0.up", None]
    assert most["layers.0.softmax", 1] == most["layers.0.softmax", None] > 1


def test_a_checkpoint_runs_with_and_without_its_mask(masked_model, tmp_path):
    slm.save(masked_model, tmp_path / "ckpt")
    fresh = tiny_model()
    slm.load(fresh, tmp_path / "ckpt")
    assert fresh.spiking.spike_mask == 2
    ids = random_windows(256, n=1, length=10, seed=8)
    with torch.no_grad():
        masked = fresh(ids).logits
        fresh.spiking.spike_mask = None
        plain = fresh(ids).logits
    assert not torch.equal(masked, plain)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_a_bad_mask_is_refused_before_any_work(bad):
    with pytest.raises(ValueError, match="spike_mask"):
        slm.SpikingConfig(spike_mask=bad)


def test_the_convert_flag_and_the_model_arg_parse_the_mask():
    from spiking_lm_plugin.lm_eval_model import _spike_mask
    from spiking_lm_plugin.recipe_flags import add_recipe_flags, recipe_from_args

    parser = argparse.ArgumentParser()
    add_recipe_flags(parser)
    assert recipe_from_args(parser.parse_args(["--spike-mask", "2"])).spike_mask == 2
    assert recipe_from_args(parser.parse_args([])).spike_mask is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--spike-mask", "0"])
    assert (_spike_mask("2"), _spike_mask("0"), _spike_mask("none")) == (2, None, None)
    with pytest.raises(ValueError, match="spike_mask"):
        _spike_mask("two")


def test_a_fit_with_the_mask_inside_fits_every_masked_site_for_k_spikes():
    """mask_in_fit: every masked site is fitted under its cap (its coding error under the mask drops
    against the post-hoc mask's), the softmax site is not capped; convert installs the same mask."""
    from spiking_lm_plugin.conversion import fit_spike_caps
    from spiking_lm_plugin.fitting.objective import evaluate
    from spiking_lm_plugin.neurons import NeuronBank

    config = tiny_config(spike_mask=1, mask_in_fit=True)
    calib = slm.calibrate(tiny_model(), config, random_windows(256), show_progress=False)
    caps = fit_spike_caps(config, calib.site_names)
    assert [c == float("inf") for c in caps.tolist()] == [n.endswith("softmax") for n in calib.site_names]
    inside = slm.fit(calib.samples, config, False, calib.site_names).bank
    posthoc = slm.fit(calib.samples, tiny_config(spike_mask=1), False, calib.site_names).bank
    capped = NeuronBank(posthoc.spec, posthoc.num_sites, posthoc.allocations, caps)
    capped.load_export(posthoc.export())
    masked = [not n.endswith("softmax") for n in calib.site_names]
    err_inside = evaluate(inside, calib.samples)[masked].mean()
    err_posthoc = evaluate(capped, calib.samples)[masked].mean()
    assert err_inside < err_posthoc
    with pytest.raises(ValueError, match="mask_in_fit needs a spike_mask"):
        slm.SpikingConfig(mask_in_fit=True)


def test_the_spike_penalty_trades_coding_error_for_fewer_fanout_weighted_spikes():
    from spiking_lm_plugin.calibration.fanout import fanout_weights
    from spiking_lm_plugin.fitting.objective import evaluate

    model = tiny_model()
    calib = slm.calibrate(model, tiny_config(), random_windows(256), show_progress=False)
    cfg = model.config
    fan = calib.fanouts
    assert fan["head_in"] == cfg.vocab_size and fan["layers.0.mlp_in"] == 2 * cfg.intermediate_size
    assert fan["layers.0.attn_in"] == cfg.hidden_size + 2 * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    assert fan["layers.1.gate_act"] == 1 and fan["layers.1.softmax"] == cfg.hidden_size // cfg.num_attention_heads
    weights = fanout_weights(fan, calib.site_names)
    results = {}
    for penalty in (0.0, 0.05):
        config = tiny_config(fit=slm.FitConfig(rounds=2, threshold_steps=10, base_steps=5, batch_samples=1024,
                                               spike_penalty=penalty))
        bank = slm.fit(calib.samples, config, False, calib.site_names, fan).bank
        _, spikes = bank.code(calib.samples)
        results[penalty] = (float((spikes.mean(1) * weights).mean()), float(evaluate(bank, calib.samples).mean()))
    assert results[0.05][0] < results[0.0][0]          # fewer fan-out-weighted spikes
    assert results[0.05][1] > results[0.0][1]          # paid for in coding error
    with pytest.raises(ValueError, match="spike_penalty"):
        slm.FitConfig(spike_penalty=-1.0)
