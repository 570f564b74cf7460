"""Base of the spiking wrappers: site firing and metered linears, shared by attention, MLP and head."""

from __future__ import annotations

import torch
from torch import nn

from .. import energy
from ..energy import EnergyMeter
from ..runtime import SpikingRuntime
from .site import Spikes
from .spike_ops import apply_linear, linear_steps


class SpikingBlock(nn.Module):
    runtime: SpikingRuntime
    sites: nn.ModuleDict

    def _meter(self) -> EnergyMeter | None:
        meter = self.runtime.meter
        return meter if meter is not None and meter.enabled else None

    def _site(self, name: str, x: torch.Tensor, need_frames: bool) -> Spikes:
        return self._metered(name, self.sites[name](x, need_frames=need_frames), x.numel())

    def _site_columns(self, name: str, x: torch.Tensor) -> Spikes:
        """A metered fused map site (softmax): the value plus per-step column counts instead of frames."""
        return self._metered(name, self.sites[name].code_with_columns(x), x.numel())

    def _metered(self, name: str, spikes: Spikes, numel: int) -> Spikes:
        """Count a site's spikes on the meter (when one is on and the site spiked)."""
        meter = self._meter()
        if meter is not None and not spikes.analog:
            meter.record_site(self.sites[name].name, spikes.events, numel, spikes.d.numel())
        return spikes

    def _count_linear(self, proj: nn.Linear, spikes: Spikes, kind: str, tokens: int) -> None:
        meter = self._meter()
        if meter is not None:
            energy.count_linear(meter, kind, 0 if spikes.analog else spikes.events, tokens, proj.in_features,
                                proj.out_features, None if spikes.analog else spikes.d.numel(),
                                proj.bias is not None)

    def _linear(self, proj: nn.Linear, spikes: Spikes, kind: str, tokens: int) -> torch.Tensor:
        self._count_linear(proj, spikes, kind, tokens)
        return apply_linear(proj, spikes)

    def _linear_steps(self, proj: nn.Linear, spikes: Spikes, kind: str, tokens: int) -> torch.Tensor:
        """Per-step outputs [T, ...] (timestep execution only)."""
        self._count_linear(proj, spikes, kind, tokens)
        return linear_steps(proj, spikes)
