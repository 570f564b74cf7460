"""Layer-wise calibration (block output error against the ANN) and LAS's outlier-aware (oat) neuron."""

import pytest
import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.fitting import fit_neurons
from spiking_lm_plugin.layerwise import LayerwiseConfig
from spiking_lm_plugin.model_surgery import spiking_sites
from spiking_lm_plugin.neurons import NeuronSpec

from .helpers import random_windows, tiny_config, tiny_model


def logits(model, ids, mode):
    slm.set_mode(model, mode)
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_layerwise_lowers_block_errors_and_is_saved(arch, tmp_path):
    model = tiny_model(arch)
    plain = tiny_model(arch)
    windows = random_windows(256, n=8, length=32)
    stage = LayerwiseConfig(windows=4, holdout_windows=2, guard_windows=2, length=32, min_gain=0.0)
    config = tiny_config(timesteps=4, layerwise=stage)
    state = slm.convert(model, config, calibration=windows, show_progress=False)
    slm.convert(plain, tiny_config(timesteps=4), calibration=windows, show_progress=False)
    report = state.fit["layerwise"]
    before, after = report["block_mse_before"], report["block_mse_after"]
    assert len(before) == 2 and all(a <= b for a, b in zip(after, before))
    # the tuned thresholds live in the sites and in the state that gets saved
    sites = spiking_sites(model)
    for i, name in enumerate(state.site_names):
        torch.testing.assert_close(state.neurons["theta"][i], sites[name].theta)
        torch.testing.assert_close(state.taus[name], sites[name].tau)
    reference = spiking_sites(plain)
    moved = [not (torch.equal(sites[n].theta, reference[n].theta) and torch.equal(sites[n].tau, reference[n].tau))
             for n in state.site_names]
    assert any(moved) == (report["accepted"] and any(report["blocks_kept"]))
    ids = random_windows(256, n=2, length=16, seed=4)
    expected = logits(model, ids, "fused")
    slm.save(model, tmp_path / "ckpt")
    fresh = tiny_model(arch)
    loaded = slm.load(fresh, tmp_path / "ckpt")
    assert torch.equal(logits(fresh, ids, "fused"), expected)
    assert loaded.config.layerwise == config.layerwise
    fresh.double()
    assert float((logits(fresh, ids, "timestep") - logits(fresh, ids, "fused")).abs().max()) <= 1e-8


def test_layerwise_config_is_validated():
    with pytest.raises(ValueError, match="windows"):
        LayerwiseConfig(windows=0)
    with pytest.raises(ValueError, match="tau_scales"):
        LayerwiseConfig(tau_scales=(0.0,))
    with pytest.raises(ValueError, match="min_gain"):
        LayerwiseConfig(min_gain=-0.1)
    assert slm.SpikingConfig(layerwise=True).layerwise == LayerwiseConfig()
    assert slm.SpikingConfig(layerwise={"windows": 3}).layerwise.windows == 3
    assert slm.SpikingConfig.from_dict(slm.SpikingConfig(layerwise=True).to_dict()).layerwise == LayerwiseConfig()


def heavy_tailed(sites: int = 3, n: int = 20000) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    u = (torch.randn(sites, n, generator=gen).abs() * torch.tensor([[0.01], [0.05], [0.2]])).clamp(max=1)
    u[:, 0] = 1.0                              # the max sets tau: one outlier per site
    return u


def test_oat_splits_outliers_from_the_normal_range():
    u = heavy_tailed()
    oat = fit_neurons(NeuronSpec.preset("oat", 6), u)
    binary = fit_neurons(NeuronSpec.preset("binary", 6), u)
    # far better than binary where outliers stretch the range, never much worse
    assert oat.loss[0] < binary.loss[0] / 5 and bool((oat.loss <= binary.loss * 2).all())
    e = oat.bank.export()
    split = e["split"]
    assert bool((split > 0).all() and (split < 1).all())
    for site, (run, _) in enumerate(oat.bank.allocations):
        d, theta = e["d"][site], e["theta"][site]
        # outlier run: weights (1 - sigma) 2^-k, thresholds raised by sigma; normal run: sigma 2^-k
        torch.testing.assert_close(d[:run], (1 - split[site]) * 2.0 ** -torch.arange(1.0, run + 1))
        torch.testing.assert_close(theta[:run], d[:run] + split[site])
        torch.testing.assert_close(d[run:], split[site] * 2.0 ** -torch.arange(1.0, 6 - run + 1))
        torch.testing.assert_close(theta[run:], d[run:])


def test_oat_converts_and_round_trips(tmp_path):
    model = tiny_model()
    slm.convert(model, tiny_config(neuron="oat", timesteps=6), calibration=random_windows(256), show_progress=False)
    ids = random_windows(256, n=2, length=12, seed=3)
    expected = logits(model, ids, "fused")
    slm.save(model, tmp_path / "oat")
    fresh = tiny_model()
    slm.load(fresh, tmp_path / "oat")
    assert torch.equal(logits(fresh, ids, "fused"), expected)
    with pytest.raises(ValueError, match="T >= 2"):
        NeuronSpec.preset("oat", 1)


@pytest.mark.slow
def test_layerwise_never_worse_than_the_per_site_fit_on_its_guard_windows(smollm2_path, smollm2_tokenizer):
    """Real SmolLM2 (two layers), real text, a stage tuned on one short window so it is prone to overfit:
    on the guard windows (full length, seen by neither the tuning nor the block decisions) the model with
    the stage is no worse than without it, and every block whose change was undone carries exactly the
    per-site fit's neurons."""
    from spiking_lm_plugin.assets import text_documents
    from spiking_lm_plugin.calibration import token_windows
    from spiking_lm_plugin.layerwise import mean_token_nll, split_windows

    from .conftest import smollm2_layers

    docs = [d["text"] for d in text_documents("enwiki-excerpt", "calibration")]
    windows = token_windows(smollm2_tokenizer, docs, 16 * 64, 64)
    recipe = dict(timesteps=4, calibration_tokens=16 * 64, sequence_length=64)
    stage = LayerwiseConfig(windows=1, length=16, holdout_windows=7, guard_windows=8, tau_scales=(0.5, 2.0),
                            threshold_shifts=(-0.5, 0.5))
    off, on = smollm2_layers(smollm2_path, 2), smollm2_layers(smollm2_path, 2)
    slm.convert(off, slm.SpikingConfig(**recipe), calibration=windows, show_progress=False)
    state = slm.convert(on, slm.SpikingConfig(**recipe, layerwise=stage), calibration=windows, show_progress=False)
    tune, held_out, guard = split_windows(windows, stage)
    # disjoint: window 0 tunes, windows 1-8 guard (whole), windows 9-15 decide the blocks
    assert torch.equal(tune, windows[:1, :16]) and torch.equal(guard, windows[1:9])
    assert torch.equal(held_out, windows[9:, :16])
    assert mean_token_nll(on, guard) <= mean_token_nll(off, guard)
    report = state.fit["layerwise"]
    assert len(report["blocks_kept"]) == 2
    tuned, fitted = spiking_sites(on), spiking_sites(off)
    for i, kept in enumerate(report["blocks_kept"]):
        names = [n for n in state.site_names if n.startswith(f"layers.{i}.")]
        same = all(torch.equal(tuned[n].theta, fitted[n].theta) and torch.equal(tuned[n].tau, fitted[n].tau)
                   for n in names)
        assert same == (not kept or not report["accepted"])
        if kept:
            assert report["holdout_block_mse_after"][i] < report["holdout_block_mse_before"][i]


def test_layerwise_needs_disjoint_held_out_windows():
    model = tiny_model("llama")
    config = tiny_config(timesteps=4, layerwise=LayerwiseConfig(windows=4, holdout_windows=2, guard_windows=3,
                                                                length=32))
    with pytest.raises(ValueError, match="needs 9 calibration windows"):
        slm.convert(model, config, calibration=random_windows(256, n=8, length=32), show_progress=False)
