"""Base of the spiking wrappers: site firing and linears fed by spikes, with their op events emitted to
the meter (docs/DESIGN.md, "Energy": compute here, counting in the cost model)."""

from __future__ import annotations

import torch
from torch import nn

from ..energy import EnergyMeter, OpEvent, SiteFired, linear_op
from ..runtime import SpikingRuntime
from .site import Spikes
from .spike_ops import apply_linear, linear_steps


class MeteredModule(nn.Module):
    """Anything that computes under ``runtime`` and reports op events to its meter."""

    runtime: SpikingRuntime

    def _meter(self) -> EnergyMeter | None:
        meter = self.runtime.meter
        return meter if meter is not None and meter.enabled else None

    def _emit(self, event: OpEvent) -> None:
        meter = self._meter()
        if meter is not None:
            meter.emit(event)

    @property
    def metering(self) -> bool:
        return self._meter() is not None

    def _emit_linear(self, proj: nn.Linear, spikes: Spikes, kind: str, tokens: int) -> None:
        if self.metering:
            self._emit(linear_op(kind, proj, tokens, None if spikes.analog else spikes.d.numel(),
                                 0.0 if spikes.analog else spikes.events))


class SpikingBlock(MeteredModule):
    sites: nn.ModuleDict

    def _site(self, name: str, x: torch.Tensor, need_frames: bool) -> Spikes:
        return self._fired(name, self.sites[name](x, need_frames=need_frames), x.numel())

    def _site_columns(self, name: str, x: torch.Tensor) -> Spikes:
        """A metered fused map site (softmax): the value plus per-step column counts instead of frames."""
        return self._fired(name, self.sites[name].code_with_columns(x), x.numel())

    def _fired(self, name: str, spikes: Spikes, numel: int) -> Spikes:
        if self.metering and not spikes.analog:
            self._emit(SiteFired(self.sites[name].name, spikes.events, numel * spikes.d.numel()))
        return spikes

    def _linear(self, proj: nn.Linear, spikes: Spikes, kind: str, tokens: int) -> torch.Tensor:
        self._emit_linear(proj, spikes, kind, tokens)
        return apply_linear(proj, spikes)

    def _linear_steps(self, proj: nn.Linear, spikes: Spikes, kind: str, tokens: int) -> torch.Tensor:
        """Per-step outputs [T, ...] (timestep execution only)."""
        self._emit_linear(proj, spikes, kind, tokens)
        return linear_steps(proj, spikes)
