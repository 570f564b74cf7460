"""Sites coded with different T (``SpikingConfig.site_timesteps``): one batched fit per T, read as one.

A :class:`NeuronBank` holds ``[sites, T]`` parameters for a single T, so sites are grouped by their T and
each group is fitted as its own batched problem (the element work is the same as one bank's). The merged
export pads every ``[sites, T]`` tensor to the longest T and adds ``timesteps`` [sites]: a site uses only
its first ``timesteps[i]`` steps (docs/DESIGN.md, "Checkpoint").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..neurons import NeuronSpec
from ..neurons.dynamics import phase_code
from .engine import FitResult

#: export keys whose second dimension is the step index (padded to the longest T)
STEP_KEYS = ("d", "theta", "h", "grain_index")


def site_spike_rate(result: FitResult, samples: torch.Tensor) -> torch.Tensor:
    """Spikes per value and step [sites] of a fitted bank on its samples (exact steps)."""
    bank = result.bank
    e = bank.export()
    cols = lambda p: [p[:, i : i + 1] for i in range(p.shape[1])]  # noqa: E731
    with torch.no_grad():
        _, events = phase_code(samples, cols(e["theta"]), cols(e["h"]), cols(e["d"]), e["v0"][:, None],
                               levels=bank.spec.levels, max_spikes=bank.budget())
    return events.mean(1) / bank.spec.timesteps


@dataclass
class GroupedFit:
    """Fits of site groups [(site indices, FitResult)] over ``num_sites`` sites, in the calibration's order."""

    groups: list[tuple[list[int], FitResult]]
    num_sites: int

    @property
    def spec(self) -> NeuronSpec:
        """The spec of the most common T (what a checkpoint records as the family; T is per site)."""
        return max(self.groups, key=lambda g: len(g[0]))[1].bank.spec

    def _scatter(self, values: list[torch.Tensor], fill: float = 0.0) -> torch.Tensor:
        width = max(v.shape[1] for v in values) if values[0].ndim == 2 else None
        shape = (self.num_sites,) if width is None else (self.num_sites, width)
        out = torch.full(shape, fill, dtype=values[0].dtype)
        for (idx, _), v in zip(self.groups, values):
            if width is None:
                out[idx] = v
            else:
                out[idx, : v.shape[1]] = v
        return out

    def export(self) -> dict[str, torch.Tensor]:
        """NeuronBank.export() of every group, padded to the longest T, plus ``timesteps`` [sites]."""
        parts = [r.bank.export() for _, r in self.groups]
        out = {key: self._scatter([p[key] for p in parts]) for key in parts[0]}
        out["timesteps"] = self._scatter([torch.full((len(idx),), r.bank.spec.timesteps, dtype=torch.long)
                                          for idx, r in self.groups])
        return out

    @property
    def loss(self) -> torch.Tensor:
        return self._scatter([r.loss for _, r in self.groups])

    @property
    def initial_loss(self) -> torch.Tensor:
        return self._scatter([r.initial_loss for _, r in self.groups])

    @property
    def round_loss(self) -> list[float]:
        """Mean objective after each round over all sites (groups weighted by their site counts)."""
        rounds = min(len(r.round_loss) for _, r in self.groups)
        return [sum(r.round_loss[i] * len(idx) for idx, r in self.groups) / self.num_sites for i in range(rounds)]

    @property
    def allocations(self) -> list[tuple[int, ...]]:
        out: list[tuple[int, ...]] = [()] * self.num_sites
        for idx, r in self.groups:
            for i, a in zip(idx, r.bank.allocations):
                out[i] = a
        return out

    def spike_rate(self, samples: torch.Tensor) -> torch.Tensor:
        return self._scatter([site_spike_rate(r, samples[idx]) for idx, r in self.groups])


def timestep_groups(site_timesteps: list[int]) -> dict[int, list[int]]:
    """T -> the indices of the sites coded with it, in ascending T."""
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(site_timesteps):
        groups.setdefault(t, []).append(i)
    return dict(sorted(groups.items()))


def site_steps(neurons: dict[str, torch.Tensor], index: int) -> int:
    """How many steps site ``index`` of an exported state uses (all of them without ``timesteps``)."""
    if "timesteps" in neurons:
        return int(neurons["timesteps"][index])
    return int(neurons["d"].shape[1])
