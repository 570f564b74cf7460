"""``model.spiking``: everything a converted model carries beside its weights, in one scoped container.

The wrappers read the execution mode and the meter from here; the prefix, the rotation record and the
installed state live here too (docs/DESIGN.md, "State"). ``with model.spiking.use(mode=..., meter=...)``
is the one way code switches the execution temporarily: the previous values come back on exit, also on
an exception.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch

    from .conversion import SpikingState
    from .energy import EnergyMeter
    from .prefix import PrefixKV

#: ``ann``: the base model exactly (sites analog, no prefix); ``analog``: sites analog behind the
#: conversion's prefix and transforms (the analog reference; what calibration records); ``fused``: each
#: neuron returns SN(x), ops run once; ``timestep``: ops run on spike frames [T, ...].
MODES = ("ann", "analog", "fused", "timestep")

_KEEP: Any = object()


@dataclass
class CachePrefix:
    """What the prefix hook knows about a KV cache it started: the prefix length and the rows whose
    leading BOS it hides (a second BOS would become a second attention sink)."""

    length: int
    hidden_bos: Any = None


@dataclass(frozen=True)
class CountedTokens:
    """Which positions of one forward's [B, L] input its energy counts (docs/DESIGN.md, "Energy").
    ``counted``: the positions whose own compute counts (their row-wise ops and their attention queries);
    ``present``: the real positions, read as keys and values by the counted queries (a rolling window's
    re-processed context is present but not counted: it is read like a KV cache). The rest is padding,
    computed and never counted."""

    counted: "torch.Tensor"
    present: "torch.Tensor"

    def __post_init__(self) -> None:
        if self.counted.shape != self.present.shape or self.counted.ndim != 2:
            raise ValueError(f"counted {tuple(self.counted.shape)} and present {tuple(self.present.shape)} "
                             "positions must both be [batch, length]")


@dataclass(eq=False)
class SpikingRuntime:
    mode: str = "ann"
    meter: "EnergyMeter | None" = None
    fingerprint: str = ""
    rotation: str = "none"
    transforms: dict[str, str] = field(default_factory=dict)   # down_proj input size -> online transform
    #: the weight recipe applied to the decoder linears (weight_quantization.quantize_weights' record; {}: none)
    weights: dict = field(default_factory=dict)
    prefix: "PrefixKV | None" = None
    state: "SpikingState | None" = None
    prefix_handle: Any = None
    #: the early-spike mask k (Appendix D.7): every site but the exempt ones keeps its first k spikes
    spike_mask: int | None = None
    #: give P V the attention mass the softmax neurons round away (SpikingConfig.mass_correction)
    mass_correction: bool = False
    #: the positions of the running forward whose energy counts (None: all); set with ``use``
    counted_tokens: CountedTokens | None = None
    #: the running forward's attention mask as every layer uses it (``modules.attention.ForwardMask``): the
    #: model hands all layers one mask, so the first layer builds this, the others reuse it, the last drops it
    attention_mask_memo: Any = None
    #: caches the prefix hook filled, weakly keyed so a finished generation frees its cache
    caches: "weakref.WeakKeyDictionary[Any, CachePrefix]" = field(default_factory=weakref.WeakKeyDictionary)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown execution mode {mode!r}; choose one of {', '.join(MODES)}")
        self.mode = mode

    @contextmanager
    def use(self, mode: str | None = None, meter: "EnergyMeter | None" = _KEEP,
            counted_tokens: CountedTokens | None = _KEEP) -> Iterator["SpikingRuntime"]:
        """Run a block under another mode, meter (``meter=None``: nothing counted) and/or counted positions;
        restored on exit."""
        saved = self.mode, self.meter, self.counted_tokens
        try:
            if mode is not None:
                self.set_mode(mode)
            if meter is not _KEEP:
                self.meter = meter
            if counted_tokens is not _KEEP:
                self.counted_tokens = counted_tokens
            yield self
        finally:
            self.mode, self.meter, self.counted_tokens = saved

    @property
    def spiking(self) -> bool:
        return self.mode in ("fused", "timestep")

    @property
    def timestep(self) -> bool:
        return self.mode == "timestep"

    @property
    def prefixed(self) -> bool:
        """Whether inputs run after the prefix (every mode but ``ann``)."""
        return self.mode != "ann" and self.prefix is not None and len(self.prefix) > 0


def runtime_of(model: Any) -> SpikingRuntime:
    """The container of a converted (or attached) model, or a one-line error."""
    runtime = getattr(model, "spiking", None)
    if not isinstance(runtime, SpikingRuntime):
        raise ValueError("this model is not converted; call spiking_lm_plugin.convert or load first")
    return runtime
