"""Batched fitting (Alg. 1), grain search (Alg. 2) and the reservoir."""

import pytest
import torch

from spiking_lm_plugin.calibration import SiteReservoir
from spiking_lm_plugin.fitting import FitConfig, evaluate, fit_neurons, search_allocations
from spiking_lm_plugin.neurons import NeuronBank, NeuronSpec


def heavy_tailed(sites: int = 6, n: int = 8000, seed: int = 0) -> torch.Tensor:
    laplace = torch.distributions.Laplace(0.0, 1.0).sample((sites // 2, n))
    student = torch.distributions.StudentT(3.0).sample((sites - sites // 2, n))
    x = torch.cat([laplace, student]).abs()
    return x / x.amax(1, keepdim=True)       # u = |x| / tau with tau = max|x|


@pytest.mark.parametrize("joint", [False, True], ids=["alternating", "joint"])
@pytest.mark.parametrize("timesteps", [6, 8])
def test_multi_grain_beats_binary_on_heavy_tails(timesteps, joint):
    torch.manual_seed(0)
    u = heavy_tailed()
    binary = evaluate(NeuronBank(NeuronSpec.preset("binary", timesteps), u.shape[0]), u)
    result = fit_neurons(NeuronSpec.preset("multi-grain", timesteps, 2), u, FitConfig(rounds=4, joint=joint))
    assert bool((result.loss < binary).all()), (result.loss, binary)
    assert float(result.loss.mean()) <= min(result.round_loss) + 1e-9     # the best round is kept
    if not joint:
        assert result.loss.shape == (u.shape[0],)
        assert float(result.loss.mean()) < 0.8 * float(binary.mean())
        # alternating converges: the round losses do not go up (within 5%)
        rounds = result.round_loss
        assert all(b <= a * 1.05 for a, b in zip(rounds, rounds[1:])), rounds


def test_phases_touch_only_their_parameters():
    torch.manual_seed(0)
    u = heavy_tailed(2, 2000)
    spec = NeuronSpec.preset("multi-grain", 6)
    bank = NeuronBank(spec, 2)
    from spiking_lm_plugin.fitting import FitEngine

    fitter = FitEngine(bank, u, FitConfig(threshold_steps=3, base_steps=2, joint=False))
    before = {k: v.detach().clone() for k, v in bank.named_parameters()}
    assert fitter.step(0)[0] == "threshold"
    assert torch.equal(bank.bases, before["bases"]) and not torch.equal(bank.theta_rel, before["theta_rel"])
    mid = {k: v.detach().clone() for k, v in bank.named_parameters()}
    assert fitter.phase_at(3) == "base"
    fitter.step(3)
    assert torch.equal(bank.theta_rel, mid["theta_rel"]) and torch.equal(bank.h_rel, mid["h_rel"])
    assert not torch.equal(bank.bases, mid["bases"])


def test_best_parameters_are_copies_not_aliases():
    u = heavy_tailed(2, 2000)
    result = fit_neurons(NeuronSpec.preset("multi-grain", 6), u, FitConfig(rounds=2, threshold_steps=5, base_steps=3))
    exported = result.bank.export()
    with torch.no_grad():
        result.bank.theta_rel.add_(1.0)
    assert not torch.equal(exported["theta"], result.bank.export()["theta"])


def test_joint_is_the_default_and_moves_every_parameter_each_step():
    torch.manual_seed(0)
    u = heavy_tailed(2, 2000)
    assert FitConfig().joint
    from spiking_lm_plugin.fitting import FitEngine

    bank = NeuronBank(NeuronSpec.preset("multi-grain", 6), 2)
    fitter = FitEngine(bank, u, FitConfig())
    for step in range(fitter.steps_per_round):
        before = {k: v.detach().clone() for k, v in bank.named_parameters()}
        assert fitter.step(step)[0] == "joint"
        assert not any(torch.equal(before[k], v) for k, v in bank.named_parameters()), step


def test_tied_preset_fit():
    u = heavy_tailed(2, 3000)
    tied = fit_neurons(NeuronSpec.preset("tied", 6), u, FitConfig(rounds=2))
    assert torch.equal(tied.bank.thresholds(), tied.bank.resets())
    assert float(tied.loss.mean()) < float(tied.initial_loss.mean())


def test_grain_search_returns_valid_and_prefers_non_uniform_on_skew():
    torch.manual_seed(0)
    u = heavy_tailed(4, 6000)
    allocations = search_allocations(NeuronSpec.preset("multi-grain", 8, 2), u, steps=60)
    assert len(allocations) == 4
    assert all(sum(a) == 8 and len(a) == 2 and min(a) >= 1 for a in allocations)
    assert any(a != (4, 4) for a in allocations), allocations


def test_fitting_rejects_non_finite_samples():
    u = heavy_tailed(2, 100)
    u[0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit_neurons(NeuronSpec.preset("multi-grain", 4), u)


def test_reservoir_is_bounded_and_uniform():
    res = SiteReservoir("s", capacity=1000, channels=10, seed=0)
    for i in range(50):   # 50 batches of increasing values: a uniform sample has a mean near the middle
        res.add(torch.full((20, 10), float(i + 1)))
    assert res.filled == 1000 and res.values.numel() == 1000
    assert 20 < float(res.values.mean()) < 31
    assert torch.equal(res.channel_max, torch.full((10,), 50.0))
    u, tau = res.normalized(per_channel=True)
    assert tau.shape == (10,) and float(u.max()) <= 1.0


def test_reservoir_stays_uniform_over_a_stream_of_large_tensors():
    """Tensors above 4x capacity are sampled by position, and a full reservoir draws only the keys that can
    still win: every batch must end up about equally represented (no bias to early or late batches)."""
    res = SiteReservoir("s", capacity=1000, channels=10, seed=0)
    for i in range(50):
        res.add(torch.full((500, 10), float(i + 1)))     # 5000 elements > 4 x capacity
    assert res.filled == 1000
    assert 23.5 < float(res.values.mean()) < 27.5
    per_batch = torch.bincount(res.values.long(), minlength=51)[1:]
    assert int(per_batch.min()) >= 5 and int(per_batch.max()) <= 40
    assert float(res.values[:500].mean()) == pytest.approx(float(res.values.mean()), abs=2.5)   # key order


def test_reservoir_tracks_the_kth_key_of_everything_offered():
    """The k-th smallest key is never drawn, only its law followed (w x Beta(k, c) per merge): after N values
    it is about k / N on average, whether the batches come whole or as thinned position draws."""
    for rows, expected_values in ((50, 25 * 200), (2000, 25 * 400)):   # whole; 8000 > 4 x capacity: 400 draws
        ratios = []
        for seed in range(40):
            res = SiteReservoir("s", capacity=100, channels=4, seed=seed)
            for _ in range(25):
                res.add(torch.rand(rows, 4) + 0.1)
            ratios.append(res.worst * (expected_values + 1) / 100)
        assert sum(ratios) / len(ratios) == pytest.approx(1.0, abs=0.06)


def test_reservoir_samples_only_kept_rows_uniformly():
    """With a mask of kept rows (the outlier tokens left out) every sampled value comes from a kept row and
    the kept rows are drawn alike, whether a batch is sampled whole or by position (above 4 x capacity)."""
    rows = torch.rand(2, 1, 50, generator=torch.Generator().manual_seed(1)) > 0.3
    rows = rows.expand(2, 3, 50)
    kept = rows.reshape(-1).repeat_interleave(8).float()
    for capacity in (300, 8000):          # by position; whole
        share = torch.zeros(5)
        for seed in range(20):
            res = SiteReservoir("s", capacity=capacity, channels=8, seed=seed)
            for b in range(6):
                res.add(torch.arange(2400.0).view(2, 3, 50, 8) + 1 + 1e4 * b, rows)
            position = (res.values % 1e4 - 1).long()
            assert bool(rows.reshape(-1)[position // 8].all())
            share += torch.bincount(position * 5 // 2400, minlength=5).float()
        expected = torch.stack([c.sum() for c in kept.chunk(5)])
        assert torch.allclose(share / share.sum(), expected / expected.sum(), atol=0.02)


def test_reservoir_tracks_channels_and_skips_zeros():
    res = SiteReservoir("s", capacity=100, channels=3, seed=0)
    x = torch.tensor([[0.0, 2.0, -4.0]]).repeat(40, 1)
    res.add(x)
    assert res.filled == 80                     # the zeros of channel 0 are not sampled
    assert set(res.channel_ids.tolist()) == {1, 2}
    u, tau = res.normalized(per_channel=True)
    assert torch.allclose(u, torch.ones_like(u))


def test_reservoir_headroom_scales_tau_and_places_the_maxima():
    res = SiteReservoir("s", capacity=100, channels=3, seed=0)
    res.add(torch.tensor([[1.0, -2.0, 4.0], [0.5, 1.0, -2.0]]))
    u1, tau1 = res.normalized(per_channel=True)
    u2, tau2 = res.normalized(per_channel=True, headroom=2.0)
    assert torch.equal(tau2, 2 * tau1) and torch.allclose(u2, u1 / 2) and float(u2.max()) == 0.5
    assert torch.equal(res.normalized_maxima(per_channel=True, headroom=2.0), torch.full((3,), 0.5))
    assert res.normalized_maxima(per_channel=False, headroom=1.25).shape == (1,)
    with pytest.raises(ValueError, match="headroom must be >= 1"):
        res.normalized(per_channel=True, headroom=0.5)


def test_reservoir_rejects_nan_with_site_name():
    res = SiteReservoir("layers.3.q", capacity=10, channels=2)
    with pytest.raises(ValueError, match="layers.3.q: 1 non-finite"):
        res.add(torch.tensor([[1.0, float("nan")]]))
