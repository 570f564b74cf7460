"""Output-aware fitting samples: each channel's gain is read off the model it feeds, and a site's samples are
drawn in proportion to (tau_c^2 g_c)^alpha (docs/DESIGN.md, "Output-aware samples")."""

from __future__ import annotations

import argparse

import pytest
import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.calibration import SiteReservoir, normalized_samples
from spiking_lm_plugin.hadamard import online_transform
from spiking_lm_plugin.recipe_flags import add_recipe_flags

from .helpers import random_windows, tiny_config, tiny_model


@pytest.mark.parametrize("size,choice", [(1536, "auto"), (192, "auto"), (96, "random"), (128, "auto")])
def test_undo_inverts_the_online_transform(size, choice):
    transform = online_transform(size, choice)
    x = torch.randn(5, size, dtype=torch.float64)
    assert torch.allclose(transform.undo(transform.apply(x)), x, atol=1e-12)
    assert torch.allclose(transform.undo(x), x @ transform.matrix(), atol=1e-12)


def test_gains_are_the_weight_columns_and_the_partner_factors_the_error_meets():
    """On a tiny LLaMA whose down_proj input gets a 12 x 16 Hadamard folded into down_proj, every linear-feeding
    site's gain is the squared column norm of what it feeds (down_proj's in the rotated basis), a product factor's
    is the other factor's mean square (times the unrotated down_proj columns for the gate product) and the
    softmax map (one channel) has none."""
    model = tiny_model(intermediate_size=192)
    original_down = {i: layer.mlp.down_proj.weight.detach().clone() for i, layer in enumerate(model.model.layers)}
    calib = slm.calibrate(model, tiny_config(sample_weighting=0.5), random_windows(256, n=8, length=32),
                          show_progress=False)
    gains, reservoirs = calib.gains, calib.reservoirs
    assert "layers.0.softmax" not in gains and set(gains) == {n for n in reservoirs if not n.endswith("softmax")}
    layer = model.model.layers[1]
    attn, mlp = layer.self_attn, layer.mlp
    assert mlp.online_transform is not None and mlp.online_transform.m == 12
    qkv = torch.cat([attn.attn.q_proj.linear.weight, attn.attn.k_proj.linear.weight, attn.attn.v_proj.linear.weight])
    assert torch.allclose(gains["layers.1.attn_in"], qkv.pow(2).sum(0), rtol=1e-5)
    assert torch.allclose(gains["layers.1.down_in"], mlp.down_proj.weight.pow(2).sum(0), rtol=1e-5)
    assert torch.allclose(gains["layers.1.o_in"], attn.attn.o_proj.linear.weight.pow(2).sum(0), rtol=1e-5)
    assert gains["layers.1.v"].shape == (attn.head_dim,)

    def mean_square(name):
        res = reservoirs[name]
        return torch.stack([res.values[res.channel_ids == c].pow(2).mean() for c in range(res.channels)])
    assert torch.allclose(gains["layers.1.q"], mean_square("layers.1.k"), rtol=1e-4)
    down_columns = original_down[1].pow(2).sum(0)
    assert not torch.allclose(down_columns, mlp.down_proj.weight.pow(2).sum(0), rtol=1e-2)   # the fold moved them
    assert torch.allclose(gains["layers.1.gate_act"], mean_square("layers.1.up") * down_columns, rtol=1e-4)
    # the default recipe reads no gains; its calibration cannot draw output-aware samples later
    plain = slm.calibrate(tiny_model(intermediate_size=192), tiny_config(), random_windows(256, n=8, length=32),
                          show_progress=False)
    assert plain.gains == {}
    with pytest.raises(ValueError, match="no channel gains"):
        plain.for_config(tiny_config(sample_weighting=0.5))
    assert torch.equal(calib.for_config(tiny_config()).samples, plain.samples)   # the same reservoirs either way


def reservoir_of(values_per_channel: list[torch.Tensor]) -> SiteReservoir:
    res = SiteReservoir("layers.0.attn_in", capacity=100_000, channels=len(values_per_channel))
    order = torch.randperm(sum(v.numel() for v in values_per_channel), generator=torch.Generator().manual_seed(1))
    res.values = torch.cat(values_per_channel)[order]          # a reservoir keeps its samples in random order
    res.channel_ids = torch.cat([torch.full((v.numel(),), c) for c, v in enumerate(values_per_channel)])[order]
    res.channel_max = torch.stack([v.abs().max() for v in values_per_channel])
    return res


def test_samples_are_drawn_in_proportion_to_the_output_weight():
    """Two channels of 8,000 values each, told apart by u (channel 0 is constant, so all its u are 1): with
    tau_c^2 g_c of 1 and 3, alpha = 1 draws a quarter and three quarters of the samples, alpha = 0 half each
    (the uniform draw, identical to the draw without gains), and a zero gain draws none of its channel."""
    gen = torch.Generator().manual_seed(0)
    res = reservoir_of([torch.full((8000,), 2.0), 0.1 + 0.4 * torch.rand(8000, generator=gen)])
    tau = res.channel_max
    gains = lambda *target: torch.tensor(target) / tau.pow(2)  # noqa: E731
    share_of_1 = lambda u: float((u < 1.0).float().mean())  # noqa: E731
    config = lambda alpha: tiny_config(sample_weighting=alpha, samples_per_site=8000, tau_headroom=1.0)  # noqa: E731
    uniform, taus = normalized_samples({res.name: res}, config(0.0), {res.name: gains(1.0, 3.0)})
    assert torch.equal(uniform, normalized_samples({res.name: res}, config(0.0))[0])
    assert torch.equal(taus[res.name], tau)
    assert share_of_1(uniform[0]) == pytest.approx(0.5, abs=0.02)
    weighted, _ = normalized_samples({res.name: res}, config(1.0), {res.name: gains(1.0, 3.0)})
    assert share_of_1(weighted[0]) == pytest.approx(0.75, abs=0.02)
    tempered, _ = normalized_samples({res.name: res}, config(0.5), {res.name: gains(1.0, 9.0)})
    assert share_of_1(tempered[0]) == pytest.approx(0.75, abs=0.02)
    none_of_1, _ = normalized_samples({res.name: res}, config(1.0), {res.name: gains(1.0, 0.0)})
    assert share_of_1(none_of_1[0]) == 0.0


def test_sample_weighting_is_validated_and_off_for_older_checkpoints():
    for bad in (-0.5, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="sample_weighting"):
            slm.SpikingConfig(sample_weighting=bad)
    data = {k: v for k, v in slm.SpikingConfig(sample_weighting=0.5).to_dict().items() if k != "sample_weighting"}
    assert slm.SpikingConfig.from_dict(data).sample_weighting == 0.0
    parser = argparse.ArgumentParser()
    add_recipe_flags(parser)
    assert getattr(parser.parse_args(["--sample-weighting", "0.5"]), "sample_weighting") == 0.5
    with pytest.raises(SystemExit):
        parser.parse_args(["--sample-weighting", "-1"])
