"""The energy meter: collects op events, prices them with a cost model when a report is read
(docs/DESIGN.md, "Energy")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .cost_model import WORD_BITS, CostModel, OpCost
from .events import LinearOp, OpEvent, SiteFired, TokensSeen


@dataclass
class EnergyConstants:
    """Energy per operation (45 nm: Horowitz 2014, as in the paper's eq. 18 and Appendix D.7).

    Attributes:
        e_mac_pj: one 32-bit multiply-accumulate, in pJ.
        e_ac_pj: one 32-bit accumulate, in pJ.
        e_rw_pj: one 32-bit read or write, in pJ (a spike moves 1 bit: 1/32 of it).
        e_neuron_pj: one neuron update per element-step (a compare and a subtract: two 32-bit adds at
            0.9 pJ each, the same source). The paper does not state its E_neuron.
        read_write: whether reads and writes are part of the energy.
    """

    e_mac_pj: float = 4.6
    e_ac_pj: float = 0.9
    e_rw_pj: float = 5.0
    e_neuron_pj: float = 1.8
    read_write: bool = False

    def parts(self, cost: OpCost, neuron_in_compute: bool = True) -> dict[str, float]:
        """Joules of a cost: ``compute_j`` (MAC + AC), ``neuron_j``, ``read_write_j`` (0 when off)."""
        neuron = neuron_in_compute or self.read_write
        return {"compute_j": (cost.mac * self.e_mac_pj + cost.ac * self.e_ac_pj) * 1e-12,
                "neuron_j": cost.neuron_steps * self.e_neuron_pj * 1e-12 if neuron else 0.0,
                "read_write_j": cost.rw_bits / WORD_BITS * self.e_rw_pj * 1e-12 if self.read_write else 0.0}

    def ann_parts(self, cost: OpCost) -> dict[str, float]:
        return self.parts(OpCost(mac=cost.ann_mac, rw_bits=cost.ann_rw_bits))


@dataclass
class SiteStats:
    spikes: float = 0.0
    slots: float = 0.0        # elements * T: what the firing rate divides by

    @property
    def firing_rate(self) -> float:
        return self.spikes / self.slots if self.slots else 0.0


def _pooled_rate(stats) -> float:
    """Spikes over slots of several sites together."""
    stats = list(stats)
    slots = sum(s.slots for s in stats)
    return sum(s.spikes for s in stats) / slots if slots else 0.0


def _by_site_type(sites: dict[str, SiteStats]) -> dict[str, float]:
    """Firing rate per site type (``layers.3.up`` -> ``up``), pooled over layers."""
    pooled: dict[str, SiteStats] = {}
    for name, stats in sites.items():
        kind = pooled.setdefault(name.rsplit(".", 1)[-1], SiteStats())
        kind.spikes += stats.spikes
        kind.slots += stats.slots
    return {k: v.firing_rate for k, v in sorted(pooled.items())}


@dataclass
class EnergyMeter:
    """Running op events, one per key (``OpEvent.key``); costs are computed when read.

    ``with model.spiking.use(meter=EnergyMeter()): model(ids)`` counts one forward."""

    constants: EnergyConstants = field(default_factory=EnergyConstants)
    enabled: bool = True
    cost_model: CostModel = field(default_factory=CostModel)
    events: dict[tuple, OpEvent] = field(default_factory=dict)

    def emit(self, event: OpEvent) -> None:
        key = event.key()
        held = self.events.get(key)
        self.events[key] = event if held is None else held.merged(event)

    def reset(self) -> None:
        self.events.clear()

    # ------------------------------------------------------------------ reading
    def _priced(self) -> tuple[OpCost, dict[int, dict[str, list[float]]]]:
        """One pass over the events: the total cost and layer -> kind -> [MAC, AC] of the ops."""
        total, by_layer = OpCost(), {}
        for event in self.events.values():
            cost = self.cost_model.cost(event.counts())
            total = total + cost
            if isinstance(event, (SiteFired, TokensSeen)):
                continue
            entry = by_layer.setdefault(event.layer, {}).setdefault(event.kind, [0.0, 0.0])
            entry[0] += cost.mac
            entry[1] += cost.ac
        return total, by_layer

    def _totals(self) -> tuple[OpCost, dict[str, list[float]]]:
        total, by_layer = self._priced()
        by_kind: dict[str, list[float]] = {}
        for kinds in by_layer.values():
            for kind, (mac, ac) in kinds.items():
                entry = by_kind.setdefault(kind, [0.0, 0.0])
                entry[0] += mac
                entry[1] += ac
        return total, by_kind

    @property
    def total(self) -> OpCost:
        return self._totals()[0]

    @property
    def mac(self) -> float:
        return self.total.mac

    @property
    def ac(self) -> float:
        return self.total.ac

    @property
    def ann_mac(self) -> float:
        return self.total.ann_mac

    @property
    def by_kind(self) -> dict[str, list[float]]:
        """kind -> [MAC, AC]."""
        return self._totals()[1]

    def by_layer(self) -> dict[int, dict[str, list[float]]]:
        """layer -> kind -> [MAC, AC] (layer -1: ops outside the decoder layers)."""
        return self._priced()[1]

    @property
    def tokens(self) -> int:
        return int(sum(float(e.tokens) for e in self.events.values() if isinstance(e, TokensSeen)))

    @property
    def sites(self) -> dict[str, SiteStats]:
        return {e.kind: SiteStats(float(e.spikes), float(e.slots))
                for e in self.events.values() if isinstance(e, SiteFired)}

    def energy_j(self) -> float:
        return sum(self.constants.parts(self.total, self.cost_model.neuron_in_compute).values())

    def ann_energy_j(self) -> float:
        return sum(self.constants.ann_parts(self.total).values())

    def fanout_firing_rate(self) -> float:
        """Spikes weighted by the outputs each one feeds, over the slots weighted the same way, at the inputs
        of linear layers: the rate the AC count sees (the plain rate counts every slot alike)."""
        fed = [e.counts() for e in self.events.values() if isinstance(e, LinearOp) and e.timesteps is not None]
        slots = sum(e.tokens * e.in_features * e.timesteps * e.out_features for e in fed)
        return sum(e.spikes * e.out_features for e in fed) / slots if slots else 0.0

    def firing_rate(self) -> float:
        return _pooled_rate(self.sites.values())

    def summary(self) -> dict[str, Any]:
        total, by_kind = self._totals()
        sites = self.sites
        tokens = self.tokens
        per = max(tokens, 1)
        c = self.constants
        parts = c.parts(total, self.cost_model.neuron_in_compute)
        ann_parts = c.ann_parts(total)
        energy, ann_energy = sum(parts.values()), sum(ann_parts.values())
        return {
            "convention": self.cost_model.name,
            **parts,
            "ann_compute_j": ann_parts["compute_j"],
            "ann_read_write_j": ann_parts["read_write_j"],
            "neuron_steps": total.neuron_steps,
            "firing_rate_fanout": self.fanout_firing_rate(),
            "tokens": tokens,
            "mac": total.mac,
            "ac": total.ac,
            "energy_j": energy,
            "mac_per_token": total.mac / per,
            "ac_per_token": total.ac / per,
            "energy_j_per_token": energy / per,
            "firing_rate": _pooled_rate(sites.values()),
            "ann_mac": total.ann_mac,
            "ann_energy_j": ann_energy,
            "ann_energy_j_per_token": ann_energy / per,
            "saving_vs_ann": 1.0 - energy / ann_energy if total.ann_mac else 0.0,
            "e_mac_pj": c.e_mac_pj,
            "e_ac_pj": c.e_ac_pj,
            "e_neuron_pj": c.e_neuron_pj,
            "read_write": c.read_write,
            "by_kind": {k: {"mac": v[0], "ac": v[1]} for k, v in sorted(by_kind.items())},
            "site_firing_rate": {k: v.firing_rate for k, v in sorted(sites.items())},
            "site_type_firing_rate": _by_site_type(sites),
        }
