"""One tau per RoPE pair at q and k: the channels a rotary embedding turns into each other share a tau, so
positions past the calibration windows do not clip the channel of a pair that looked small."""

from __future__ import annotations

import torch
from transformers import Phi3Config

import spiking_lm_plugin as slm
from spiking_lm_plugin.model_surgery import spiking_sites
from spiking_lm_plugin.rope_pairs import rotary_dim, tie_rotary_pairs

from .helpers import random_windows, tiny_config, tiny_model


def test_pairs_share_the_larger_maximum_and_partial_rotary_keeps_the_rest():
    maxima = torch.tensor([1.0, 5.0, 2.0, 0.5, 3.0, 0.25, 7.0, 9.0])
    assert tie_rotary_pairs(maxima, 8).tolist() == [3.0, 5.0, 7.0, 9.0, 3.0, 5.0, 7.0, 9.0]
    assert tie_rotary_pairs(maxima, 4).tolist() == [2.0, 5.0, 2.0, 5.0, 3.0, 0.25, 7.0, 9.0]
    assert tie_rotary_pairs(maxima, 0) is maxima
    assert rotary_dim(tiny_model().config, 16) == 16
    assert rotary_dim(Phi3Config(hidden_size=64, num_attention_heads=4, partial_rotary_factor=0.5), 16) == 8


def q_inputs(model, windows) -> dict[str, torch.Tensor]:
    """The analog q / k of every layer (after RoPE) over ``windows``."""
    seen, sites = {}, spiking_sites(model)
    hooks = [site.register_forward_hook(lambda m, args, out, n=name: seen.__setitem__(n, args[0].detach()))
             for name, site in sites.items() if name.rsplit(".", 1)[-1] in ("q", "k")]
    try:
        with torch.no_grad(), model.spiking.use(mode="analog"):
            model(windows)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def lopsided_model():
    """A tiny LLaMA whose q and k put 10x more into the first channel of every RoPE pair than the second (as
    trained models' q and k have channels of very different size): at early positions the slow pairs have
    barely turned, so the second channels look small."""
    model = tiny_model(rope_theta=10000.0)
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                rows = proj.weight.view(-1, 2, layer.self_attn.head_dim // 2, proj.weight.shape[1])
                rows[:, 1] *= 0.1
    return model


def test_long_positions_clip_less_at_q_and_k_with_one_tau_per_pair():
    """Calibrated on 16-token windows, a 256-token window's later positions turn the slow RoPE pairs' norm into
    channels that looked small: with a tau per channel many of those values pass tau (they saturate), with one
    tau per pair a few dozen do; the default ties every pair (and only the q and k sites)."""
    calibration = random_windows(256, n=32, length=16)
    long = random_windows(256, n=2, length=256, seed=5)
    clipped, taus = {}, {}
    for pairs in (False, True):
        model = lopsided_model()
        slm.convert(model, tiny_config(rope_pair_tau=pairs, tau_headroom=1.0), calibration=calibration,
                    show_progress=False)
        sites = spiking_sites(model)
        taus[pairs] = {name: site.tau.clone() for name, site in sites.items()}
        values = q_inputs(model, long)
        clipped[pairs] = sum(int((x.abs() > sites[name].tau).sum()) for name, x in values.items())
    assert clipped[False] > 1000 and clipped[False] > 20 * clipped[True], clipped
    for name, tau in taus[True].items():
        kind = name.rsplit(".", 1)[-1]
        if kind in ("q", "k"):
            half = tau.numel() // 2
            assert torch.equal(tau[:half], tau[half:]), name
            assert torch.equal(tau, tie_rotary_pairs(taus[False][name], tau.numel())), name
        else:
            assert torch.equal(tau, taus[False][name]), name
    assert not slm.SpikingConfig.from_dict({k: v for k, v in slm.SpikingConfig().to_dict().items()
                                            if k != "rope_pair_tau"}).rope_pair_tau   # older checkpoints
