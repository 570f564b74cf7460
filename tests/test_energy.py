"""Energy counting on hand-checkable cases (paper eq. 18; docs/DESIGN.md, "Energy")."""

import itertools

import pytest
import torch
from torch import nn

from spiking_lm_plugin import energy
from spiking_lm_plugin.energy import EnergyConstants, EnergyMeter
from spiking_lm_plugin.modules import SpikingLMHead
from spiking_lm_plugin.runtime import SpikingRuntime


def binary_head(in_features=4, out_features=3, timesteps=2):
    runtime = SpikingRuntime(mode="fused")
    head = SpikingLMHead(nn.Linear(in_features, out_features, bias=False), runtime)
    d = torch.tensor([2.0 ** -(t + 1) for t in range(timesteps)])
    head.sites["head_in"].set_neuron(d, d, d, 0.0, torch.ones(1))
    return head, runtime


@pytest.mark.parametrize("mode", ["fused", "timestep"])
def test_one_linear_with_known_spikes(mode):
    """x = [0.75, 0.25, 0, -0.5], binary T=2, tau=1: spikes 11, 01, 00, 10 -> 4 spikes.
    AC = 4 spikes x 3 outputs = 12; MAC = T x 3 outputs x 1 token = 6 (per-step scaling)."""
    head, runtime = binary_head()
    runtime.set_mode(mode)
    runtime.meter = meter = EnergyMeter()
    x = torch.tensor([[[0.75, 0.25, 0.0, -0.5]]])
    y = head(x)
    torch.testing.assert_close(y, head.linear(x))            # exactly representable at T=2
    mac, ac = meter.by_kind["lm_head"]
    assert (mac, ac) == (6.0, 12.0)
    assert meter.sites["head_in"].spikes == 4 and meter.sites["head_in"].slots == 8
    # the ANN does 4 x 3 MACs for the same layer
    assert meter.ann_mac - energy.NONLINEAR_MACS["rmsnorm"] * 4 == 12
    c = EnergyConstants()
    # 4 values x T=2 neuron updates, each a compare and a subtract
    assert meter.energy_j() == pytest.approx((meter.mac * c.e_mac_pj + meter.ac * c.e_ac_pj + 8 * c.e_neuron_pj) * 1e-12)


def test_elementwise_product_counts():
    """A_t = [1,0],[1,1]; B_t = [1,1],[0,1] over 2 elements: nnz(A)=3, nnz(B)=3, nnz(A and B)=2."""
    meter = EnergyMeter()
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    meter.emit(energy.product_op("gate", 2, 2, a, b))
    assert meter.by_kind["gate"] == [2 * 2 * 2, 3 + 3 + 2]
    assert meter.ann_mac == 2


def test_scores_counts_respect_the_causal_mask():
    """One head, 2 queries x 2 keys, causal: allowed pairs (0,0), (1,0), (1,1)."""
    meter = EnergyMeter()
    q = torch.zeros(1, 1, 1, 2, 1)
    k = torch.zeros(1, 1, 1, 2, 1)
    q[0, 0, 0, 1, 0] = 1.0     # query 1 spikes: fans out to its 2 allowed keys
    k[0, 0, 0, 0, 0] = 1.0     # key 0 spikes: fans out to its 2 allowed queries; and (1,0) both spike
    allowed = torch.tensor([[True, False], [True, True]]).view(1, 1, 2, 2)
    meter.emit(energy.scores_op("qk", q, k, allowed, heads=1, head_dim=1, timesteps=1))
    mac, ac = meter.by_kind["qk"]
    assert ac == 2 + 2 + 1 and mac == 2 * 1 * 3
    assert meter.ann_mac == 3


def test_read_write_model_adds_energy():
    head, runtime = binary_head()
    runtime.meter = plain = EnergyMeter()
    head(torch.tensor([[[0.75, 0.25, 0.0, -0.5]]]))
    runtime.meter = rw = EnergyMeter(EnergyConstants(read_write=True))
    head(torch.tensor([[[0.75, 0.25, 0.0, -0.5]]]))
    assert rw.energy_j() > plain.energy_j() and rw.summary()["read_write"]


def _masks(L: int, B: int) -> dict[str, torch.Tensor]:
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool))
    padded = causal[None].repeat(B, 1, 1)
    padded[1, :, :2] = False                       # batch 1 left-padded by 2: still one run of keys per row
    holed = causal.clone()
    holed[3:, 1] = False                           # a hidden key inside the run: not an interval
    return {"causal": causal.view(1, 1, L, L), "left-padded": padded.view(B, 1, L, L),
            "holed": holed.view(1, 1, L, L), "per-head": causal[None, None].repeat(B, 4, 1, 1)}


@pytest.mark.parametrize("mask", ["causal", "left-padded", "holed", "per-head"])
def test_grouped_attention_counts_match_brute_force(mask):
    """GQA: 4 query heads read 2 key/value heads; counts equal an explicit sum over every (t, b, h, l, s, d),
    for interval masks (prefix sums) and others (explicit products), from frames or the fused site's sums."""
    gen = torch.Generator().manual_seed(0)
    T, B, H, Hkv, L, D = 3, 2, 4, 2, 5, 3
    q = (torch.rand(T, B, H, L, D, generator=gen) < 0.4).float()
    k = (torch.rand(T, B, Hkv, L, D, generator=gen) < 0.4).float()
    v = (torch.rand(T, B, Hkv, L, D, generator=gen) < 0.4).float()
    allowed = _masks(L, B)[mask]
    full = allowed.expand(B, H, L, L)
    p = (torch.rand(T, B, H, L, L, generator=gen) < 0.5).float() * full
    kv = lambda h: h // (H // Hkv)  # noqa: E731
    qk_ac = pv_ac = 0.0
    for t, b, h, row, s in itertools.product(range(T), range(B), range(H), range(L), range(L)):
        if not full[b, h, row, s]:
            continue
        for d in range(D):
            qk_ac += q[t, b, h, row, d] + k[t, b, kv(h), s, d] + q[t, b, h, row, d] * k[t, b, kv(h), s, d]
            pv_ac += p[t, b, h, row, s] + v[t, b, kv(h), s, d] + p[t, b, h, row, s] * v[t, b, kv(h), s, d]
    assert (energy.intervals(allowed) is not None) == (mask in ("causal", "left-padded"))
    meter = EnergyMeter()
    meter.emit(energy.scores_op("qk", q, k, allowed, heads=H, head_dim=D, timesteps=T))
    meter.emit(energy.values_op("pv", p, v, allowed, heads=H, head_dim=D, timesteps=T))
    assert meter.by_kind["qk"][1] == pytest.approx(float(qk_ac))
    assert meter.by_kind["pv"][1] == pytest.approx(float(pv_ac))
    assert meter.ann_mac == 2 * int(full.sum()) * D
    # the fused softmax site's sums (its spikes, and its spikes weighted by V's spikes per key) give the same
    sums = EnergyMeter()
    v_rows = energy.value_rows(v, None)
    weighted = (p * energy.query_head_weights(v_rows, H, T)[..., None, :]).sum()
    mask = energy.statistics.PairCounts.of(allowed, H, None, B)
    sums.emit(energy.values_from_sums("pv", p.sum(), weighted, v_rows, mask, D, T, B))
    assert sums.by_kind["pv"] == pytest.approx(meter.by_kind["pv"])


@pytest.mark.parametrize("analog", ["up", "gate_act"])
@pytest.mark.parametrize("mode", ["fused", "timestep"])
def test_a_gate_product_with_one_analog_operand_counts_the_spiking_ones(analog, mode):
    """Sites without ``up`` (or without ``gate_act``): the product is fed by one spike train, so it costs
    one AC per spike of that operand and T scaling MACs per element, never ANN MACs only, never a crash."""
    import spiking_lm_plugin as slm
    from spiking_lm_plugin.sites import ALL_SITE_TYPES

    from .helpers import random_windows, tiny_config, tiny_model

    model = tiny_model()
    sites = tuple(s for s in ALL_SITE_TYPES if s != analog)
    slm.convert(model, tiny_config(sites=sites), calibration=random_windows(256), show_progress=False)
    slm.set_mode(model, mode)
    meter = EnergyMeter()
    model.spiking.meter = meter
    ids = random_windows(256, n=2, length=8, seed=3)
    with torch.no_grad():
        model(ids)
    spiking = "gate_act" if analog == "up" else "up"
    spikes = sum(meter.sites[f"layers.{i}.{spiking}"].spikes for i in range(2))
    mac, ac = meter.by_kind["gate_product"]
    numel = 2 * 2 * 8 * model.config.intermediate_size          # layers x batch x length x width
    assert spikes > 0 and ac == spikes and mac == 8 * numel


def test_p_v_with_an_analog_v_counts_the_softmax_spikes_alike_in_both_executions():
    """Sites without ``v``: P V is fed by the softmax spikes alone, each adding one V row (head_dim ACs); the
    fused count (from the softmax kernel) equals the time-stepped one (from the frames), never a crash."""
    import spiking_lm_plugin as slm
    from spiking_lm_plugin.sites import ALL_SITE_TYPES

    from .helpers import random_windows, tiny_config, tiny_model

    model = tiny_model()
    sites = tuple(s for s in ALL_SITE_TYPES if s != "v")
    slm.convert(model, tiny_config(sites=sites, timesteps=6), calibration=random_windows(256), show_progress=False)
    ids = random_windows(256, n=2, length=8, seed=3)
    counts = {}
    for mode in ("fused", "timestep"):
        meter = EnergyMeter()
        with torch.no_grad(), model.spiking.use(mode=mode, meter=meter):
            model(ids)
        counts[mode] = meter.by_kind["pv"]
        spikes = sum(meter.sites[f"layers.{i}.softmax"].spikes for i in range(2))
        head_dim = model.config.hidden_size // model.config.num_attention_heads
        assert spikes > 0 and counts[mode][1] == pytest.approx(spikes * head_dim)
    assert counts["fused"] == pytest.approx(counts["timestep"])


def test_events_of_one_key_add_up_and_any_cost_model_prices_the_total():
    """The meter keeps one running event per op key; pricing the sum equals summing the prices (every
    rule is linear in the counts), and another cost model re-prices the same events without a rerun."""
    meter = EnergyMeter()
    first = energy.LinearOp("q_proj", 4, 3, False, 2, tokens=1, spikes=torch.tensor(4.0))
    second = energy.LinearOp("q_proj", 4, 3, False, 2, tokens=2, spikes=5.0)
    meter.emit(first)
    meter.emit(second)
    meter.emit(energy.LinearOp("q_proj", 4, 3, False, None, tokens=1))       # analog: another key
    assert len(meter.events) == 2
    model = energy.CostModel()
    merged = model.cost(first.merged(second).counts())
    assert merged.ac == model.cost(first.counts()).ac + model.cost(second.counts()).ac == 9 * 3
    assert meter.by_kind["q_proj"] == [2 * 3 * 3 + 4 * 3, 27.0]

    class DoubleAC(energy.CostModel):
        def linear(self, event: energy.LinearOp) -> energy.OpCost:
            base = super().linear(event)
            return energy.OpCost(base.mac, 2 * base.ac, base.rw_bits, base.ann_mac, base.ann_rw_bits)

    meter.cost_model = DoubleAC()
    assert meter.by_kind["q_proj"][1] == 54.0
    assert EnergyMeter(events=meter.events).by_kind["q_proj"][1] == 27.0     # the base model is untouched


@pytest.mark.parametrize("size", [1536, 11008, 14336, 4096])
def test_hadamard_macs_equal_a_count_of_the_transforms_operations(size):
    """The energy model counts the transform in its butterfly form. Every arithmetic op of a butterfly
    implementation, counted from the torch operators it dispatches (adds, subtracts, scalings per output
    element; m x k x n per matmul), equals ``macs_per_element``, and that butterfly computes exactly
    what ``apply`` (small dense Walsh blocks on CPU) computes."""
    import math

    from torch.utils._python_dispatch import TorchDispatchMode

    from spiking_lm_plugin.hadamard import online_transform

    aten = torch.ops.aten
    elementwise = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.mul.Scalar,
                   aten.div.Scalar}

    class Count(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in elementwise and args[0].numel() > 1:
                Count.ops += out.numel()
            elif func in (aten.mm.default, aten.bmm.default):
                a, b = args[0], args[1]
                Count.ops += a.numel() // a.shape[-1] * a.shape[-1] * b.shape[-1]
            return out

    transform = online_transform(size)
    small = transform.small() / math.sqrt(transform.p)      # built once, like a weight

    def butterfly(x: torch.Tensor) -> torch.Tensor:
        y = x.reshape(-1, transform.m, transform.p)
        h = 1
        while h < transform.p:
            y = y.reshape(-1, transform.p // (2 * h), 2, h)
            a, b = y[:, :, 0, :], y[:, :, 1, :]
            y = torch.stack((a + b, a - b), dim=2)
            h *= 2
        y = y.reshape(-1, transform.m, transform.p)
        y = torch.matmul(small, y) if transform.m > 1 else y / math.sqrt(transform.p)
        return y.reshape(x.shape)

    x = torch.randn(3, size, dtype=torch.float64)
    with Count():
        reference = butterfly(x)
    assert Count.ops == transform.macs_per_element * x.numel()
    assert torch.allclose(transform.apply(x), reference, rtol=0, atol=1e-10)


def test_the_fanout_rate_weights_each_spike_by_the_outputs_it_feeds():
    """A site feeding 3 outputs fires 4 of 8 slots, one feeding 1 output fires 0 of 8: per slot 0.25,
    per fan-out (4 x 3) / (8 x 3 + 8 x 1) = 0.375; analog inputs are not slots."""
    meter = EnergyMeter()
    meter.emit(energy.LinearOp("a", 4, 3, False, 2, tokens=1, spikes=4.0))
    meter.emit(energy.LinearOp("b", 4, 1, False, 2, tokens=1, spikes=0.0))
    meter.emit(energy.LinearOp("c", 4, 9, False, None, tokens=1))
    meter.emit(energy.SiteFired("x", False, 4.0, 8.0))
    meter.emit(energy.SiteFired("y", False, 0.0, 8.0))
    summary = meter.summary()
    assert summary["firing_rate"] == 0.25 and summary["firing_rate_fanout"] == pytest.approx(0.375)
    assert summary["site_type_firing_rate"] == {"x": 0.5, "y": 0.0}


def test_a_forward_meters_the_same_whatever_ran_before_it():
    """The attention builds the mask's pair counts once per forward and reuses them across layers: the next
    forward's mask, or the same mask tensor changed in place, is counted afresh, never the previous one."""
    import spiking_lm_plugin as slm

    from .helpers import random_windows, tiny_config, tiny_model

    model = tiny_model()
    slm.convert(model, tiny_config(), calibration=random_windows(256), show_progress=False)
    ids = random_windows(256, n=2, length=12, seed=5)
    left_padded = torch.ones(2, 12, dtype=torch.long)
    left_padded[0, :5] = 0

    def metered(mask: torch.Tensor) -> dict:
        meter = EnergyMeter()
        with torch.no_grad(), model.spiking.use(mode="fused", meter=meter):
            model(ids, attention_mask=mask)
        return {(key, name): float(getattr(event, name)) for key, event in meter.events.items()
                for name in ("pairs", "query_fanout", "key_fanout", "coincidences") if hasattr(event, name)}

    alone = metered(left_padded)
    full = torch.ones_like(left_padded)
    assert metered(full) != alone                   # the padding changes the attention's counts
    assert metered(left_padded) == alone            # and a forward after another counts its own mask
    # a 4D mask reaches the attention as the caller's tensor: changed in place, it is a new mask
    custom = torch.ones(12, 12, dtype=torch.bool).tril()[None, None].clone()
    before = metered(custom)
    custom[..., :3] = False
    after = metered(custom)
    assert after != before and after == metered(custom.clone())
    assert model.spiking.attention_mask_memo is None     # no mask outlives its forward
