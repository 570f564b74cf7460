"""Conversion of tiny random LLaMA / Qwen2 / Mistral models: both executions, checkpoints, generate."""

import json

import pytest
import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.energy import EnergyMeter
from spiking_lm_plugin.hf_compat import output_cache, with_cache
from spiking_lm_plugin.model_surgery import spiking_sites
from spiking_lm_plugin.sites import ALL_SITE_TYPES, LAYER_SITE_TYPES

from .helpers import random_windows, tiny_config, tiny_model


def converted(arch="llama", seed=0, **overrides):
    model = tiny_model(arch, seed=seed)
    slm.convert(model, tiny_config(**overrides), calibration=random_windows(256), show_progress=False)
    return model


def run(model, ids, mode, meter=None):
    slm.set_mode(model, mode)
    model.spiking.meter = meter
    with torch.no_grad():
        return model(ids).logits


def rel_diff(a, b):
    return float((a - b).abs().max() / b.abs().max())


def rel_norm(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_fused_and_timestep_agree_on_logits_and_counts(arch):
    """fp32: the two executions sum in different orders, so a value within ~1 ulp of a threshold can
    fire in one and not the other (a few in 10^6 decisions, each moving the logits of a tiny model by
    ~1e-4); we bound the overall difference and the spike disagreement. The float64 test below shows the
    executions are the same function (1e-10)."""
    model = converted(arch)
    ids = random_windows(256, n=2, length=24, seed=7)
    meters = {m: EnergyMeter() for m in ("fused", "timestep")}
    fused = run(model, ids, "fused", meters["fused"])
    timestep = run(model, ids, "timestep", meters["timestep"])
    assert rel_norm(timestep, fused) <= 1e-2
    f, t = meters["fused"].summary(), meters["timestep"].summary()
    # a float32 rounding difference may flip a rare spike at a threshold; one flip in layer 0 moves every
    # later site's input by an ulp and can flip a few more there (seen: 6e-4 of the AC from one o_in flip)
    assert f["ac"] > 0 and abs(f["ac"] - t["ac"]) <= 1e-3 * f["ac"] and f["mac"] == t["mac"]
    spikes_f = {k: v.spikes for k, v in meters["fused"].sites.items()}
    spikes_t = {k: v.spikes for k, v in meters["timestep"].sites.items()}
    assert abs(sum(spikes_f.values()) - sum(spikes_t.values())) <= 1e-3 * sum(spikes_f.values())
    # per site: a flip in one layer moves the next layers' inputs by an ulp too (llama after one layer-0
    # o_in flip: up to 1.8e-3 of a layer-1 site's spikes; qwen2 after layer-0 up / down_in flips, with another
    # calibration draw: 2.6e-3 at layer 1's down_in; the float64 test below has none)
    assert all(abs(spikes_f[k] - spikes_t[k]) <= max(3, 5e-3 * spikes_f[k]) for k in spikes_f), (spikes_f, spikes_t)
    # every site fired and was counted: full coverage, both gate-product operands included
    expected = {f"layers.{i}.{s}" for i in range(2) for s in LAYER_SITE_TYPES} | {"head_in"}
    assert set(f["site_firing_rate"]) == expected


@pytest.mark.smoke
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_fused_and_timestep_are_the_same_function_in_float64(arch):
    model = converted(arch).double()
    ids = random_windows(256, n=2, length=24, seed=7)
    meters = {m: EnergyMeter() for m in ("fused", "timestep")}
    fused = run(model, ids, "fused", meters["fused"])
    assert rel_diff(run(model, ids, "timestep", meters["timestep"]), fused) <= 1e-10
    assert meters["fused"].summary()["ac"] == meters["timestep"].summary()["ac"]


def test_spiking_differs_from_ann_and_ann_mode_is_exact():
    model = tiny_model()
    ids = random_windows(256, n=2, length=16, seed=5)
    with torch.no_grad():
        reference = model(ids).logits
    slm.convert(model, tiny_config(), calibration=random_windows(256), show_progress=False)
    torch.testing.assert_close(run(model, ids, "ann"), reference, rtol=1e-5, atol=1e-5)
    assert rel_diff(run(model, ids, "fused"), reference) > 1e-4


def test_fine_neurons_approach_the_ann():
    ids = random_windows(256, n=2, length=16, seed=9)
    errors = []
    for timesteps in (4, 16):
        model = tiny_model()
        with torch.no_grad():
            reference = model(ids).logits
        # calibrating on the evaluated tokens keeps every value below tau: only the code's resolution remains
        slm.convert(model, tiny_config(timesteps=timesteps, neuron="binary"), calibration=ids, show_progress=False)
        errors.append(rel_diff(run(model, ids, "fused"), reference))
    assert errors[1] < 1e-3 and errors[1] < errors[0] / 50, errors


def test_generate_runs_in_both_modes():
    model = converted()
    ids = random_windows(256, n=1, length=8, seed=2)
    outputs = {}
    for mode in ("fused", "timestep"):
        slm.set_mode(model, mode)
        outputs[mode] = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert outputs[mode].shape == (1, 14)
    assert torch.equal(outputs["fused"], outputs["timestep"])


def test_kv_cache_matches_full_forward():
    model = converted()
    ids = random_windows(256, n=1, length=12, seed=4)
    slm.set_mode(model, "fused")
    with torch.no_grad():
        full = model(ids).logits[:, -1]
        past = output_cache(model(ids[:, :-1], use_cache=True))
        step = model(ids[:, -1:], **with_cache({"use_cache": True}, past)).logits[:, -1]
    assert rel_diff(step, full) <= 1e-4


@pytest.mark.smoke
def test_save_load_reproduces_logits_bit_for_bit(tmp_path):
    model = converted(neuron="multi-grain", allocation="search", search_steps=5)
    ids = random_windows(256, n=2, length=16, seed=8)
    expected = run(model, ids, "fused")
    slm.save(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["neurons.safetensors", "spiking_config.json"]
    fresh = tiny_model()
    state = slm.load(fresh, tmp_path / "ckpt")
    assert torch.equal(run(fresh, ids, "fused"), expected)
    assert state.config.allocation == "search" and len(state.site_names) == len(spiking_sites(fresh))


def test_site_subset_leaves_the_rest_analog(tmp_path):
    model = converted(sites=("attn_in", "down_in"))
    names = model.spiking.state.site_names
    assert names == [f"layers.{i}.{s}" for i in range(2) for s in ("attn_in", "down_in")]
    meter = EnergyMeter()
    run(model, random_windows(256, 1, 8), "fused", meter)
    assert set(meter.summary()["site_firing_rate"]) == set(names)


@pytest.fixture()
def saved(tmp_path):
    model = converted()
    return slm.save(model, tmp_path / "ckpt")


def test_load_refuses_a_different_base_model(saved):
    with pytest.raises(slm.CheckpointError, match="was made for base model"):
        slm.load(tiny_model(seed=123), saved)


def test_load_reports_missing_sites(saved):
    meta = json.loads((saved / "spiking_config.json").read_text())
    meta["sites"] = meta["sites"][1:]
    (saved / "spiking_config.json").write_text(json.dumps(meta))
    with pytest.raises(slm.CheckpointError, match=r"missing \['layers.0.attn_in'\]"):
        slm.load(tiny_model(), saved)


def test_load_reports_corrupt_tensors(saved):
    (saved / "neurons.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(slm.CheckpointError, match="truncated or padded|corrupt"):
        slm.load(tiny_model(), saved)


def test_load_refuses_a_newer_format(saved):
    meta = json.loads((saved / "spiking_config.json").read_text())
    meta["format_version"] = 99
    (saved / "spiking_config.json").write_text(json.dumps(meta))
    with pytest.raises(slm.CheckpointError, match="newer than this spiking-lm supports"):
        slm.load(tiny_model(), saved)


def test_load_reports_a_missing_directory(tmp_path):
    with pytest.raises(slm.CheckpointError, match="does not exist"):
        slm.load(tiny_model(), tmp_path / "nope")


def test_save_is_atomic_and_overwrites(saved):
    model = converted()
    slm.save(model, saved)      # over an existing checkpoint
    leftovers = [p.name for p in saved.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    slm.load(tiny_model(), saved)


def test_unsupported_architecture_is_named():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match="unsupported architecture 'gpt2'.*llama, qwen2, mistral"):
        slm.convert(model, tiny_config(), calibration=random_windows(64))


def test_config_validation():
    with pytest.raises(ValueError, match="more grains"):
        slm.SpikingConfig(timesteps=2, grains=3)
    with pytest.raises(ValueError, match="unknown site types"):
        slm.SpikingConfig(sites=("attn_in", "bogus"))
    with pytest.raises(ValueError, match="sums to"):
        slm.SpikingConfig(timesteps=8, allocation=(2, 2))
    assert slm.SpikingConfig().sites == ALL_SITE_TYPES
    with pytest.raises(ValueError, match="tau_headroom must be 'auto' or a number >= 1"):
        slm.SpikingConfig(tau_headroom=0.9)
    assert slm.SpikingConfig(timesteps=6).headroom == 1.0 and slm.SpikingConfig(timesteps=8).headroom == 1.5
    with pytest.raises(ValueError, match="unknown headroom site types"):
        slm.SpikingConfig(headroom_sites=("up", "bogus"))
    old = {k: v for k, v in slm.SpikingConfig().to_dict().items()
           if k not in ("tau_headroom", "headroom_sites", "exclude_outlier_tokens")}
    assert slm.SpikingConfig.from_dict(old).tau_headroom == 1.0   # older checkpoints were fitted with tau = max
    assert not slm.SpikingConfig.from_dict(old).exclude_outlier_tokens    # ... and every calibration token
    assert slm.SpikingConfig().excludes_outliers and slm.SpikingConfig(prefix=[5]).excludes_outliers
    assert not any(slm.SpikingConfig(**kw).excludes_outliers for kw in (
        {"prefix": "none"}, {"prefix": []}, {"prefix_max_tokens": 0}, {"exclude_outlier_tokens": False}))


def test_tau_headroom_codes_values_above_the_calibration_maximum():
    """A value 1.3x the largest seen in calibration is clipped to it with tau = max; with headroom 1.5 it
    is coded (the headroom sites' taus grow by 1.5x, the others keep tau = max)."""
    windows = random_windows(256)
    errors, taus = {}, {}
    for headroom in (1.0, 1.5):
        model = tiny_model()
        slm.convert(model, tiny_config(tau_headroom=headroom), calibration=windows, show_progress=False)
        sites = spiking_sites(model)
        taus[headroom] = {name: site.tau.clone() for name, site in sites.items()}
        up = next(site for name, site in sites.items() if name.endswith(".up"))
        calibration_max = up.tau / headroom
        x = 1.3 * calibration_max * torch.where(torch.arange(up.channels) % 2 == 0, 1.0, -1.0)
        slm.set_mode(model, "fused")
        errors[headroom] = float(((up(x[None]).value[0] - x).abs() / x.abs()).mean())
    assert errors[1.0] > 0.2 and errors[1.5] < 0.1, errors
    for name, tau in taus[1.0].items():
        factor = 1.5 if name.rsplit(".", 1)[-1] in slm.SpikingConfig().headroom_sites else 1.0
        assert torch.allclose(taus[1.5][name], factor * tau), name


def test_calibration_renormalizes_for_another_recipe_without_a_forward():
    from spiking_lm_plugin.conversion import calibrate

    windows = random_windows(256)
    calib = calibrate(tiny_model(), tiny_config(timesteps=6), windows, show_progress=False)   # auto: no headroom
    again = calib.for_config(tiny_config(timesteps=8))                                         # auto: 1.5
    fresh = calibrate(tiny_model(), tiny_config(timesteps=8), windows, show_progress=False)
    assert torch.equal(again.samples, fresh.samples)
    assert all(torch.equal(again.taus[n], fresh.taus[n]) for n in calib.site_names)
    assert not torch.equal(again.samples, calib.samples) and again.prefix == calib.prefix


def test_bf16_conversion_runs():
    model = tiny_model().to(torch.bfloat16)
    slm.convert(model, tiny_config(), calibration=random_windows(256), show_progress=False)
    logits = run(model, random_windows(256, 1, 8), "fused")
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_bf16_fused_and_timestep_agree_and_the_checkpoint_reloads(tmp_path):
    """bf16 end to end: the two executions agree to bf16 resolution (the timestep one accumulates its
    steps in a different order) and a reloaded checkpoint reproduces the fused logits bit for bit."""
    model = tiny_model().to(torch.bfloat16)
    slm.convert(model, tiny_config(), calibration=random_windows(256), show_progress=False)
    ids = random_windows(256, 2, 12, seed=4)
    fused, timestep = run(model, ids, "fused").float(), run(model, ids, "timestep").float()
    scale = fused.abs().max()
    assert float((fused - timestep).abs().max()) <= 0.05 * float(scale), float((fused - timestep).abs().max())
    slm.save(model, tmp_path / "bf16")
    fresh = tiny_model().to(torch.bfloat16)
    slm.load(fresh, tmp_path / "bf16")
    assert torch.equal(run(fresh, ids, "fused"), run(model, ids, "fused"))


def test_stages_compose_to_convert():
    """prepare -> calibrate -> fit -> install, called one by one, is convert."""
    from spiking_lm_plugin.conversion import build_state

    windows = random_windows(256)
    config = tiny_config(timesteps=6)
    whole = tiny_model()
    slm.convert(whole, config, calibration=windows, show_progress=False)
    staged = tiny_model()
    slm.prepare(staged, config)
    calib = slm.calibrate(staged, config, windows, show_progress=False)
    result = slm.fit(calib.samples, config, show_progress=False)
    slm.install(staged, build_state(config, calib, result, "tiny", staged.spiking.fingerprint, 0.0))
    ids = random_windows(256, 2, 10, seed=5)
    assert torch.equal(run(staged, ids, "fused"), run(whole, ids, "fused"))


def test_rotating_twice_and_a_foreign_mlp_are_refused_before_any_change():
    model = tiny_model()
    slm.prepare(model, tiny_config(rotation="online"))
    weight = model.model.layers[0].mlp.down_proj.weight.clone()
    with pytest.raises(ValueError, match="already carries rotation 'online'"):
        slm.prepare(model, tiny_config(rotation="full"))
    assert torch.equal(model.model.layers[0].mlp.down_proj.weight, weight)
    relu = tiny_model(hidden_act="relu")
    with pytest.raises(ValueError, match="unsupported MLP activation"):
        slm.prepare(relu, tiny_config())


def test_the_analog_mode_is_the_prefixed_ann():
    """``analog``: every site analog behind the conversion's prefix; equals the ANN reading prefix + input."""
    model = tiny_model()
    state = slm.convert(model, tiny_config(prefix=[3, 4], rotation="none"), calibration=random_windows(256),
                        show_progress=False)
    ids = random_windows(256, 2, 10, seed=6)
    with torch.no_grad():
        full = tiny_model()(torch.cat([torch.tensor([state.prefix] * 2), ids], dim=1)).logits[:, 2:]
    torch.testing.assert_close(run(model, ids, "analog"), full, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_cuda_fused_equals_timestep_in_float64():
    model = tiny_model().double().cuda()
    slm.convert(model, tiny_config(), calibration=random_windows(256), show_progress=False)
    ids = random_windows(256, 2, 12, seed=4).cuda()
    torch.testing.assert_close(run(model, ids, "fused"), run(model, ids, "timestep"), rtol=0, atol=1e-9)
