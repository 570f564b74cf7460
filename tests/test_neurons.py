"""The neuron family: closed form vs dynamics, binary expansion, presets, bad input."""

import pytest
import torch

from spiking_lm_plugin.neurons import (PRESETS, NeuronBank, NeuronSpec, SigmoidSurrogate, StraightThroughSurrogate,
                                       compositions, decode_frames, encode_frames, phase_code)
from spiking_lm_plugin.neurons.kernels import _site_code, _site_frames


def site_params(bank: NeuronBank, i: int = 0):
    e = bank.export()
    return e["theta"][i].unbind(), e["h"][i].unbind(), e["d"][i].unbind(), e["v0"][i]


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("timesteps", [1, 4, 8])
def test_closed_form_equals_step_by_step(preset, timesteps):
    """SN(x) from the closed form equals decode(encode(x)) exactly, for every preset."""
    from spiking_lm_plugin.neurons.outlier_aware import OutlierAwareBank

    if preset == "oat" and timesteps < 2:
        with pytest.raises(ValueError, match="T >= 2"):
            NeuronSpec.preset(preset, timesteps)
        return
    spec = NeuronSpec.preset(preset, timesteps)
    bank = (OutlierAwareBank if preset == "oat" else NeuronBank)(spec, 1)
    with torch.no_grad():   # perturb the learnable ones so the check is not only about the init
        bank.theta_rel.mul_(torch.linspace(0.8, 1.2, timesteps))
        bank.h_rel.mul_(torch.linspace(1.1, 0.9, timesteps))
    theta, h, d, v0 = site_params(bank)
    u = torch.rand(5000) * 1.3
    closed, events = phase_code(u, theta, h, d, v0, levels=spec.levels, max_spikes=spec.max_spikes)
    frames = encode_frames(u, theta, h, v0, levels=spec.levels, max_spikes=spec.max_spikes)
    assert frames.shape == (timesteps, 5000)
    assert torch.equal(closed, decode_frames(frames, d))
    assert torch.equal(events, frames.abs().sum(0))
    if spec.max_spikes is not None:
        assert int((frames != 0).sum(0).max()) <= spec.max_spikes
    if spec.levels == 2:
        assert set(frames.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("preset", ["binary", "multi-grain", "two-spike", "integer"])
def test_site_kernel_matches_dynamics_with_sign_and_tau(preset):
    spec = NeuronSpec.preset(preset, 6)
    bank = NeuronBank(spec, 1)
    e = bank.export()
    x = torch.randn(7, 33) * 3
    tau = torch.rand(33) * 4 + 0.5
    value, events = _site_code(x, tau, e["theta"][0], e["h"][0], e["d"][0], e["v0"][0], spec.levels,
                               spec.max_spikes or 0)
    value2, frames, events2 = _site_frames(x, tau, e["theta"][0], e["h"][0], e["d"][0], e["v0"][0], spec.levels,
                                           spec.max_spikes or 0)
    code, _ = phase_code(x.abs() / tau, *[e[k][0].unbind() for k in ("theta", "h", "d")], e["v0"][0],
                         levels=spec.levels, max_spikes=spec.max_spikes)
    assert torch.equal(value, torch.sign(x) * tau * code)
    assert torch.equal(value, value2)
    assert int(events) == int(events2) == int(frames.abs().sum())
    # frames carry the sign: {-1, 0, 1} (or +-levels) and decode back to the value
    assert torch.equal(torch.sign(frames).abs().max(), torch.tensor(1.0))
    weighted = (frames * e["d"][0].view(-1, 1, 1)).sum(0) * tau
    torch.testing.assert_close(weighted, value)


@pytest.mark.parametrize("timesteps", [3, 6, 8, 10])
def test_binary_is_the_t_bit_expansion(timesteps):
    bank = NeuronBank(NeuronSpec.preset("binary", timesteps), 1)
    theta, h, d, v0 = site_params(bank)
    u = torch.rand(20000, dtype=torch.float64) * (1 - 2.0 ** -timesteps)
    code, _ = phase_code(u.float(), theta, h, d, v0)
    expected = torch.floor(u * 2**timesteps) / 2**timesteps
    # the float32 comparison may round up a value within one ulp of a code boundary
    mismatch = (code.double() - expected).abs() > 1e-6
    assert mismatch.float().mean() < 1e-3
    assert float((u - code.double()).abs().max()) <= 2.0 ** -timesteps + 1e-6
    # above the top code it saturates at 1 - 2^-T
    sat, _ = phase_code(torch.tensor([1.5, 7.0]), theta, h, d, v0)
    assert torch.allclose(sat, torch.full((2,), 1 - 2.0 ** -timesteps))


def test_rate_and_ttfs_codes():
    rate = NeuronBank(NeuronSpec.preset("rate", 4), 1)
    theta, h, d, v0 = site_params(rate)
    code, events = phase_code(torch.tensor([0.0, 0.3, 0.5, 1.0, 2.0]), theta, h, d, v0)
    assert torch.allclose(code, torch.tensor([0.0, 0.25, 0.5, 1.0, 1.0]))   # round(4u)/4, saturating
    ttfs = NeuronBank(NeuronSpec.preset("ttfs", 6), 1)
    theta, h, d, v0 = site_params(ttfs)
    code, events = phase_code(torch.tensor([0.7, 0.3, 0.1]), theta, h, d, v0, max_spikes=1)
    assert torch.allclose(code, torch.tensor([0.5, 0.25, 0.0625]))
    assert torch.equal(events, torch.ones(3))


def test_integer_neuron_is_base_l_expansion():
    bank = NeuronBank(NeuronSpec.preset("integer", 3, levels=4), 1)
    theta, h, d, v0 = site_params(bank)
    u = torch.tensor([0.0, 0.5, 0.75, 0.3])
    code, _ = phase_code(u, theta, h, d, v0, levels=4)
    expected = torch.floor(u * 64) / 64
    assert torch.allclose(code, expected)


def test_surrogates_are_swappable_and_give_gradients():
    bank = NeuronBank(NeuronSpec.preset("multi-grain", 6), 3)
    u = torch.rand(3, 500)
    for surrogate in (SigmoidSurrogate(10.0), StraightThroughSurrogate()):
        bank.zero_grad()
        out = bank(u, surrogate=surrogate)
        ((out - u) ** 2).mean().backward()
        assert bank.theta_rel.grad is not None and bank.theta_rel.grad.abs().sum() > 0
    exact = bank(u)
    assert torch.equal(exact, bank(u, surrogate=SigmoidSurrogate(3.0)).detach())   # forward is the true step


def test_allocations_and_grain_index():
    assert compositions(4, 2) == [(1, 3), (2, 2), (3, 1)]
    assert len(compositions(6, 3)) == 10
    spec = NeuronSpec.preset("multi-grain", 8, 2)
    assert spec.allocation == (4, 4)
    bank = NeuronBank(spec, 2, [(2, 6), (5, 3)])
    assert bank.allocations == [(2, 6), (5, 3)]
    with torch.no_grad():
        bank.bases.copy_(torch.tensor([[2.0, 3.0], [2.0, 3.0]]))
    d = bank.weights()
    assert torch.allclose(d[0], torch.tensor([2.0 ** -1, 2.0 ** -2] + [3.0 ** -t for t in range(3, 9)]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="multi-grain", timesteps=0), "T must be an integer >= 1"),
    (dict(name="multi-grain", timesteps=3, grains=4), "more grains"),
    (dict(name="multi-grain", timesteps=8, allocation=(3, 3)), "sums to 6"),
    (dict(name="multi-grain", timesteps=4, allocation=(4, 0)), "empty grain"),
    (dict(name="nope", timesteps=4), "unknown neuron preset"),
])
def test_bad_specs_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NeuronSpec.preset(kwargs.pop("name"), **kwargs)


def test_bad_tau_raises():
    from spiking_lm_plugin.modules import SpikeSite
    from spiking_lm_plugin.runtime import SpikingRuntime

    site = SpikeSite("s", 4, SpikingRuntime())
    d = torch.tensor([0.5, 0.25])
    with pytest.raises(ValueError, match="tau must be > 0"):
        site.set_neuron(d, d, d, 0.0, torch.tensor([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="expected 1 or 4"):
        site.set_neuron(d, d, d, 0.0, torch.ones(3))


def _stepwise_code(bank, u, surrogate):
    """Autograd through the stepwise dynamics, the reference the fit's one-kernel code is checked against."""
    from spiking_lm_plugin.neurons.dynamics import phase_code

    cols = lambda p: [p[:, t:t + 1] for t in range(p.shape[1])]  # noqa: E731
    return phase_code(u, cols(bank.thresholds()), cols(bank.resets()), cols(bank.weights()), bank.v0[:, None],
                      surrogate=surrogate, surrogate_scale=cols(bank.d0), spike_grad=True)


@pytest.mark.parametrize("timesteps,grains", [(8, 2), (5, 3), (1, 1)])
def test_fit_code_with_written_out_backward_matches_autograd_through_the_steps(timesteps, grains):
    from spiking_lm_plugin.neurons.surrogate_code import exact_phase_code, surrogate_phase_code

    g = torch.Generator().manual_seed(timesteps)
    bank = NeuronBank(NeuronSpec.preset("multi-grain", timesteps, grains), 4).double()
    with torch.no_grad():   # thresholds, resets and bases off their initial values, so every term matters
        bank.theta_rel.mul_(torch.rand(bank.theta_rel.shape, generator=g, dtype=torch.float64) * 0.6 + 0.7)
        bank.h_rel.mul_(torch.rand(bank.h_rel.shape, generator=g, dtype=torch.float64) * 0.6 + 0.7)
        bank.bases.add_(torch.rand(bank.bases.shape, generator=g, dtype=torch.float64) * 0.3)
    u = torch.rand(4, 2000, generator=g, dtype=torch.float64) * 1.2
    surrogate = SigmoidSurrogate(5.0)
    results = []
    for code in (lambda: _stepwise_code(bank, u, surrogate),
                 lambda: surrogate_phase_code(u, bank.thresholds(), bank.resets(), bank.weights(), bank.v0[:, None],
                                              bank.d0, surrogate.beta)):
        bank.zero_grad()
        approx, spikes = code()
        # a spike penalty on the counts too, so the count's surrogate gradient is checked
        loss = ((approx - u) ** 2).mean() + 0.1 * spikes.mean()
        loss.backward()
        # (T = 1: the one reset feeds nothing, so autograd leaves its gradient None)
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in (bank.theta_rel, bank.h_rel, bank.bases)]
        results.append((approx.detach(), spikes.detach(), grads))
    (a0, s0, g0), (a1, s1, g1) = results
    assert g0[0].abs().sum() > 0 and g0[2].abs().sum() > 0
    assert torch.equal(a0, a1) and torch.equal(s0, s1)
    for reference, written_out in zip(g0, g1):
        torch.testing.assert_close(written_out, reference, rtol=1e-10, atol=1e-14)
    with torch.no_grad():
        exact = exact_phase_code(u, bank.thresholds(), bank.resets(), bank.weights(), bank.v0[:, None])
        stepwise = _stepwise_code(bank, u, None)
    assert torch.equal(exact[0], stepwise[0]) and torch.equal(exact[1], stepwise[1])
