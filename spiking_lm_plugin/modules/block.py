"""Base of the spiking wrappers: site firing and linears fed by spikes, with their op events emitted to
the meter (docs/DESIGN.md, "Energy": compute here, counting in the cost model)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..energy import EnergyMeter, OpEvent, SiteFired, linear_op
from ..energy.events import Count
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

    def _counted_rows(self, x: torch.Tensor) -> torch.Tensor | None:
        """Which positions [B, L] of ``x`` [B, L, ...] (the token layout) count for energy; None: all."""
        tokens = self.runtime.counted_tokens
        if tokens is None or not self.metering:
            return None
        if tuple(tokens.counted.shape) != tuple(x.shape[:2]):
            raise ValueError(f"the counted positions {tuple(tokens.counted.shape)} do not match a forward over "
                             f"{tuple(x.shape[:2])} tokens")
        return tokens.counted

    @staticmethod
    def _tokens(x: torch.Tensor, rows: torch.Tensor | None) -> Count:
        """Counted rows of ``x`` [B, L, C] (all of them without a mask)."""
        return x.numel() // x.shape[-1] if rows is None else rows.sum()

    def _emit_linear(self, proj: nn.Linear, spikes: Spikes, kind: str, tokens: Count) -> None:
        if self.metering:
            self._emit(linear_op(kind, proj, tokens, None if spikes.analog else spikes.d.numel(),
                                 0.0 if spikes.analog else spikes.events, corrected=spikes.offset is not None))


class SpikingBlock(MeteredModule):
    sites: nn.ModuleDict

    def _site(self, name: str, x: torch.Tensor, need_frames: bool, elements=None, rows=None) -> Spikes:
        """Fire site ``name`` on ``x``; ``rows`` (bool, broadcastable to x.shape[:-1]): the values whose
        spikes count (default all); ``elements``: how many of x's values are counted neurons (default: the
        values of the counted rows)."""
        spikes = self.sites[name](x, need_frames=need_frames, rows=rows)
        return self._fired(name, spikes, self._elements(x, rows) if elements is None else elements)

    def _site_weighted(self, name: str, x: torch.Tensor, weights: torch.Tensor, elements=None, rows=None) -> Spikes:
        """A metered fused map site (softmax): the value plus its spikes weighted per step and column
        (:meth:`SpikeSite.code_weighted`) instead of frames."""
        spikes = self.sites[name].code_weighted(x, weights, rows=rows)
        return self._fired(name, spikes, self._elements(x, rows) if elements is None else elements)

    @staticmethod
    def _elements(x: torch.Tensor, rows: torch.Tensor | None) -> Count:
        return x.numel() if rows is None else rows.expand(x.shape[:-1]).sum() * x.shape[-1]

    def _fired(self, name: str, spikes: Spikes, elements) -> Spikes:
        if self.metering and not spikes.analog:
            self._report_fired(name, spikes.events, elements)
        return spikes

    def _report_fired(self, name: str, events: Count, elements: Count) -> None:
        """Site ``name`` sent ``events`` spikes from ``elements`` counted neurons (each with T slots)."""
        site = self.sites[name]
        self._emit(SiteFired(site.name, site.masked, events, elements * site.timesteps))

    def _linear(self, proj: nn.Linear, spikes: Spikes, kind: str, tokens: Count) -> torch.Tensor:
        self._emit_linear(proj, spikes, kind, tokens)
        return apply_linear(proj, spikes)

    def _linear_steps(self, proj: nn.Linear, spikes: Spikes, kind: str, tokens: Count) -> torch.Tensor:
        """Per-step outputs [T, ...] (timestep execution only)."""
        self._emit_linear(proj, spikes, kind, tokens)
        return linear_steps(proj, spikes)
