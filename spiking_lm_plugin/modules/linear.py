"""Linear layers fed by spikes, for code that calls them with a tensor (transformers' own forwards)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from ..hf_compat import CompatibilityError, VERSION
from ..runtime import SpikingRuntime
from .block import MeteredModule
from .site import Spikes
from .spike_ops import apply_linear


def split_linear(linear: nn.Linear, sizes: list[int]) -> list[nn.Linear]:
    """Linears whose weights (and biases) are views of consecutive output rows of ``linear``: a fused
    projection becomes separate ones without copying a weight."""
    parts, start = [], 0
    for size in sizes:
        part = nn.Linear(linear.in_features, size, bias=linear.bias is not None, device="meta")
        part.weight = nn.Parameter(linear.weight[start:start + size], requires_grad=False)
        if linear.bias is not None:
            part.bias = nn.Parameter(linear.bias[start:start + size], requires_grad=False)
        parts.append(part)
        start += size
    return parts


class HeldSpikes:
    """The spikes of one input while a forward that reads it several times runs (q, k and v read the
    attention input): the site fires once, each reader gets the same spikes."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.spikes: Spikes | None = None

    @contextmanager
    def holding(self, spikes: Spikes) -> Iterator[None]:
        self.spikes = spikes
        try:
            yield
        finally:
            self.spikes = None

    def spikes_for(self, x: torch.Tensor) -> Spikes:
        held = self.spikes
        if held is None or x is not held.value:
            # transformers computed something else from the attention input before projecting it
            raise CompatibilityError(f"{self.where}: a projection got a tensor other than the attention input "
                                     f"(transformers {VERSION}); this spiking-lm does not know that forward")
        return held


class SpikeFedLinear(MeteredModule):
    """``linear`` applied to the spikes ``source`` gives for its input: SN(x) once (fused) or the weighted
    sum of per-step accumulations (timestep), with its op event on the meter."""

    def __init__(self, linear: nn.Linear, kind: str, runtime: SpikingRuntime,
                 source: Callable[[torch.Tensor], Spikes], layer: int = -1) -> None:
        super().__init__()
        self.linear, self.kind, self.runtime, self.layer = linear, kind, runtime, layer
        self._source = source

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spikes = self._source(x)
        if self.metering:
            self._emit_linear(self.linear, spikes, self.kind, self._tokens(x, self._counted_rows(x)))
        return apply_linear(self.linear, spikes)
