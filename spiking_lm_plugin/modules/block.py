"""Base of the spiking wrappers: site firing and linears fed by spikes, with their op events emitted to
the meter (docs/DESIGN.md, "Energy": compute here, counting in the cost model)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..energy import EnergyMeter, OpEvent, SiteFired, linear_op
from ..runtime import SpikingRuntime
from .site import Spikes
from .spike_ops import apply_linear, linear_steps


class MeteredModule(nn.Module):
    """Anything that computes under ``runtime`` and reports op events to its meter, tagged with ``layer``."""

    runtime: SpikingRuntime
    layer: int = -1

    def _meter(self) -> EnergyMeter | None:
        meter = self.runtime.meter
        return meter if meter is not None and meter.enabled else None

    def _emit(self, event: OpEvent) -> None:
        meter = self._meter()
        if meter is not None:
            meter.emit(event if event.layer == self.layer else replace(event, layer=self.layer))

    @property
    def metering(self) -> bool:
        return self._meter() is not None

    def _emit_linear(self, proj: nn.Linear, spikes: Spikes, kind: str, tokens: int) -> None:
        if self.metering:
            self._emit(linear_op(kind, proj, tokens, None if spikes.analog else spikes.d.numel(),
                                 0.0 if spikes.analog else spikes.events))


class SpikingBlock(MeteredModule):
    sites: nn.ModuleDict

    def _site(self, name: str, x: torch.Tensor, need_frames: bool, elements=None) -> Spikes:
        """Fire site ``name`` on ``x``; ``elements``: how many of x's values are real neurons (default all)."""
        spikes = self.sites[name](x, need_frames=need_frames)
        return self._fired(name, spikes, x.numel() if elements is None else elements)

    def _site_columns(self, name: str, x: torch.Tensor, elements=None) -> Spikes:
        """A metered fused map site (softmax): the value plus per-step column counts instead of frames."""
        return self._fired(name, self.sites[name].code_with_columns(x), x.numel() if elements is None else elements)

    def _fired(self, name: str, spikes: Spikes, elements) -> Spikes:
        if self.metering and not spikes.analog:
            site = self.sites[name]
            self._emit(SiteFired(site.name, site.masked, spikes.events, elements * spikes.d.numel()))
        return spikes

    def _linear(self, proj: nn.Linear, spikes: Spikes, kind: str, tokens: int) -> torch.Tensor:
        self._emit_linear(proj, spikes, kind, tokens)
        return apply_linear(proj, spikes)

    def _linear_steps(self, proj: nn.Linear, spikes: Spikes, kind: str, tokens: int) -> torch.Tensor:
        """Per-step outputs [T, ...] (timestep execution only)."""
        self._emit_linear(proj, spikes, kind, tokens)
        return linear_steps(proj, spikes)
