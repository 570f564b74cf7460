"""The cost model: op events -> MACs, ACs and bits moved, for the SNN and for the ANN doing the same op
(paper eq. 18 and Appendix D.7; docs/DESIGN.md, "Energy").

Rules (one per event type, linear in the event's counts):
- Linear fed by spikes: AC = spikes x out_features (each spike adds one weight column); MAC = T x
  out_features per token (scaling each step's accumulation by d_t; per-channel tau is folded into the
  weight, so it costs nothing). Fed by an analog input: MAC = in x out per token. A bias adds once per output.
- Activation-activation product A B = sum_t (S_A(t) B_t + A_t S_B(t) - A_t B_t): AC = the operands'
  spike fan-outs plus their coincidences (over the pairs the mask allows); MAC = 2 T per output element
  (the two per-step scalings). One spiking operand: one AC per spike, T MACs per element (the rule of a
  linear fed by spikes). Analog: one MAC per multiply.
- Norms, softmax and gate activations act on integrated inputs: ``NONLINEAR_MACS`` per element, the same
  for ANN and SNN. The online Hadamard transform: its ``macs_per_element`` on analog values, both sides.
  Embedding lookups are free.
- Neurons: every element-step a neuron runs costs one neuron update (compare + subtract); under the
  early-spike mask one more (its counter compare), as eq. 60 charges the mask a second E_neuron.
- Read/write (optional): every 32-bit activation read and result write counts 32 bits, a spike 1.

``PaperCostModel`` prices the same events by the paper's conventions instead (eq. 18, eq. 59-60);
docs/DESIGN.md, "Energy", tabulates every difference.
"""

from __future__ import annotations

from dataclasses import dataclass

from .events import (HadamardOp, LinearOp, NonlinearOp, OpEvent, ProductOp, ScoresOp, SiteFired, SoftmaxOp,
                     ValuesOp)

#: the cost model's method that prices each event type (events without one cost nothing)
RULES = {LinearOp: "linear", ProductOp: "product", ScoresOp: "scores", ValuesOp: "values",
         NonlinearOp: "nonlinear", SoftmaxOp: "softmax", HadamardOp: "hadamard", SiteFired: "site"}

#: fixed MACs per element of the nonlinearities (the same in the ANN and the SNN); tanh-GELU has a few more
NONLINEAR_MACS = {"rmsnorm": 4, "softmax": 4, "silu": 4, "gelu_tanh": 6,
                  # the attention mass correction per output element: lost mass x mean value, the add, the
                  # mean's division (the row sums and key running sums ride on the same count)
                  "mass_correction": 4}

#: bits of one analog operand (activations are read and written as 32-bit values)
WORD_BITS = 32


@dataclass(frozen=True)
class OpCost:
    """What one op costs in the SNN (``mac``, ``ac``, ``rw_bits``, ``neuron_steps``) and in the ANN (``ann_*``)."""

    mac: float = 0.0
    ac: float = 0.0
    rw_bits: float = 0.0
    ann_mac: float = 0.0
    ann_rw_bits: float = 0.0
    neuron_steps: float = 0.0

    def __add__(self, other: "OpCost") -> "OpCost":
        return OpCost(self.mac + other.mac, self.ac + other.ac, self.rw_bits + other.rw_bits,
                      self.ann_mac + other.ann_mac, self.ann_rw_bits + other.ann_rw_bits,
                      self.neuron_steps + other.neuron_steps)


def _analog(mac: float, rw_bits: float) -> OpCost:
    """An op the SNN runs on analog values, exactly as the ANN does."""
    return OpCost(mac=mac, rw_bits=rw_bits, ann_mac=mac, ann_rw_bits=rw_bits)


#: analog ops only the spiking model runs (the ANN baseline has none of them)
SPIKING_ONLY_NONLINEAR = ("mass_correction",)


def _nonlinear(event: NonlinearOp, rw_bits: float) -> OpCost:
    mac = NONLINEAR_MACS[event.kind] * event.numel
    if event.kind in SPIKING_ONLY_NONLINEAR:
        return OpCost(mac=mac, rw_bits=rw_bits)
    return _analog(mac, rw_bits)


class CostModel:
    """Counts per op event (this project's accounting). A subclass prices another convention by
    overriding the rule of an event type (the methods named in ``RULES``)."""

    name = "ours"
    #: whether neuron updates are part of the compute energy (else only of the read/write extension)
    neuron_in_compute = True

    def cost(self, event: OpEvent) -> OpCost:
        rule = RULES.get(type(event))
        return OpCost() if rule is None else getattr(self, rule)(event)

    def linear(self, event: LinearOp) -> OpCost:
        tokens, n_in, n_out = event.tokens, event.in_features, event.out_features
        bias_adds = tokens * n_out if event.bias else 0.0
        ann_mac = tokens * n_in * n_out + bias_adds
        ann_rw = WORD_BITS * tokens * (n_in + n_out)
        if event.timesteps is None:
            return _analog(ann_mac, ann_rw)
        return OpCost(mac=event.timesteps * tokens * n_out, ac=event.spikes * n_out + bias_adds,
                      rw_bits=event.spikes + WORD_BITS * tokens * n_out, ann_mac=ann_mac, ann_rw_bits=ann_rw)

    def product(self, event: ProductOp) -> OpCost:
        n = event.numel
        ann = dict(ann_mac=n, ann_rw_bits=WORD_BITS * 3 * n)
        spikes = event.spikes_a + event.spikes_b
        if event.spiking_operands == 0:
            return _analog(n, WORD_BITS * 3 * n)
        if event.spiking_operands == 1:
            return OpCost(mac=event.timesteps * n, ac=spikes, rw_bits=spikes + WORD_BITS * 2 * n, **ann)
        return OpCost(mac=2 * event.timesteps * n, ac=spikes + event.coincidences,
                      rw_bits=spikes + WORD_BITS * n, **ann)

    def scores(self, event: ScoresOp) -> OpCost:
        ann = dict(ann_mac=event.pairs * event.head_dim, ann_rw_bits=WORD_BITS * 3 * event.pairs)
        if event.timesteps is None:
            return _analog(ann["ann_mac"], ann["ann_rw_bits"])
        return OpCost(mac=2 * event.timesteps * event.pairs,
                      ac=event.query_fanout + event.key_fanout + event.coincidences,
                      rw_bits=event.query_spikes + event.key_spikes + WORD_BITS * event.pairs, **ann)

    def values(self, event: ValuesOp) -> OpCost:
        ann = dict(ann_mac=event.pairs * event.head_dim, ann_rw_bits=WORD_BITS * 3 * event.pairs)
        if event.timesteps is None:
            return _analog(ann["ann_mac"], ann["ann_rw_bits"])
        return OpCost(mac=2 * event.timesteps * event.outputs,
                      ac=event.prob_spikes * event.head_dim + event.value_fanout + event.coincidences,
                      rw_bits=event.prob_spikes + event.value_spikes + WORD_BITS * event.outputs, **ann)

    def nonlinear(self, event: NonlinearOp) -> OpCost:
        return _nonlinear(event, WORD_BITS * 2 * event.numel)

    def softmax(self, event: SoftmaxOp) -> OpCost:
        return _analog(NONLINEAR_MACS["softmax"] * event.pairs, WORD_BITS * 2 * event.pairs)

    def hadamard(self, event: HadamardOp) -> OpCost:
        return _analog(event.macs_per_element * event.numel, WORD_BITS * 2 * event.numel)

    def site(self, event: SiteFired) -> OpCost:
        return OpCost(neuron_steps=event.slots * (2 if event.masked else 1))


class PaperCostModel(CostModel):
    """The paper's accounting (eq. 18; eq. 59-60 with read/write): attention and its softmax over the full
    L x S rectangle; read/write only at linear layers, where the ANN reads a 32-bit weight (a quantized one
    at its width) and a 32-bit activation per MAC and writes each 32-bit output, and the SNN reads a weight and a 1-bit spike
    per AC and writes 1 bit per neuron step; neuron energy only in eq. 59/60 (with read/write)."""

    name = "paper"
    neuron_in_compute = False

    def linear(self, event: LinearOp) -> OpCost:
        ours = super().linear(event)
        macs, outputs = event.tokens * event.in_features * event.out_features, event.tokens * event.out_features
        weight_bits = event.weight_bits or WORD_BITS      # a quantized weight is read at its width (Table 8)
        ann_rw = (WORD_BITS + weight_bits) * macs + WORD_BITS * outputs
        spiking_rw = ann_rw if event.timesteps is None else (weight_bits + 1) * event.spikes * event.out_features
        return OpCost(ours.mac, ours.ac, spiking_rw, ours.ann_mac, ann_rw)

    def product(self, event: ProductOp) -> OpCost:
        ours = super().product(event)
        return OpCost(ours.mac, ours.ac, 0.0, ours.ann_mac, 0.0)

    def scores(self, event: ScoresOp) -> OpCost:
        ann_mac = event.full_pairs * event.head_dim
        if event.timesteps is None:
            return _analog(ann_mac, 0.0)
        return OpCost(mac=2 * event.timesteps * event.full_pairs, ann_mac=ann_mac,
                      ac=event.query_fanout_full + event.key_fanout_full + event.coincidences_full)

    def values(self, event: ValuesOp) -> OpCost:
        ann_mac = event.full_pairs * event.head_dim
        if event.timesteps is None:
            return _analog(ann_mac, 0.0)
        return OpCost(mac=2 * event.timesteps * event.outputs, ann_mac=ann_mac,
                      ac=event.prob_spikes * event.head_dim + event.value_fanout_full + event.coincidences)

    def nonlinear(self, event: NonlinearOp) -> OpCost:
        return _nonlinear(event, 0.0)

    def softmax(self, event: SoftmaxOp) -> OpCost:
        return _analog(NONLINEAR_MACS["softmax"] * event.full_pairs, 0.0)

    def hadamard(self, event: HadamardOp) -> OpCost:
        return _analog(event.macs_per_element * event.numel, 0.0)

    def site(self, event: SiteFired) -> OpCost:
        return OpCost(rw_bits=event.slots, neuron_steps=event.slots * (2 if event.masked else 1))


#: ``--convention`` / ``energy_convention=``: the cost models by name
COST_MODELS: dict[str, type[CostModel]] = {"ours": CostModel, "paper": PaperCostModel}


def cost_model(name: str) -> CostModel:
    if name not in COST_MODELS:
        raise ValueError(f"unknown energy convention {name!r}; choose one of {', '.join(COST_MODELS)}")
    return COST_MODELS[name]()
