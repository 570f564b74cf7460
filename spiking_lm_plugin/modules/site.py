"""One spiking site in the network: a frozen neuron (paper eq. 1-3, 7-8) plus its tau."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..neurons.kernels import site_code, site_code_weighted, site_frames, site_value
from ..runtime import SpikingRuntime
from .blocked_attention import MapRecorder
from ..sites import MASK_EXEMPT_SITE_TYPES, site_type


@dataclass
class Spikes:
    """What a site emits. ``value`` = SN(x) (or x when analog); ``frames`` = signed spike magnitudes
    [T, *x.shape] with step weights ``d`` [T] and scale ``tau`` (broadcast on the last dim); ``offset`` [C]:
    the site's mean coding error, already taken out of ``value`` (bias correction; the frames sum to
    ``value + offset``, and a linear reading the frames subtracts W offset once)."""

    value: torch.Tensor
    frames: torch.Tensor | None = None
    d: torch.Tensor | None = None
    tau: torch.Tensor | None = None
    events: torch.Tensor | None = None   # number of nonzero spikes (scalar); None when analog or not metered
    weighted: torch.Tensor | None = None  # sum of spikes x per-step column weights (softmax map, metered fused)
    offset: torch.Tensor | None = None

    @property
    def analog(self) -> bool:
        return self.d is None

    def step_scales(self, dtype: torch.dtype) -> torch.Tensor:
        """d_t * tau [T, 1, ..., C|1] in ``dtype``: what a spike of each step weighs, broadcast over the frames."""
        assert self.frames is not None and self.d is not None
        shape = (-1,) + (1,) * (self.frames.ndim - 1)
        return self.d.to(dtype).view(shape) * self.tau.to(dtype)

    def weighted_frames(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """frames_t * d_t * tau in ``dtype`` (default the frames'), the contribution of each step (sums to
        ``value``); one pass over the frames."""
        dtype = dtype or self.frames.dtype
        return self.frames.to(dtype) * self.step_scales(dtype)

    def rows(self, start: int, stop: int) -> "Spikes":
        """Rows ``start:stop`` of the second-to-last dim (query rows, or keys) of the value and the frames, as
        views: what a block of the attention reads."""
        if start == 0 and stop >= self.value.shape[-2]:
            return self
        frames = None if self.frames is None else self.frames[..., start:stop, :]
        return Spikes(self.value[..., start:stop, :], frames, self.d, self.tau, offset=self.offset)

    def squeeze_last(self) -> "Spikes":
        """Drop a trailing channel dim of size 1 (the softmax map is one channel), as views."""
        frames = None if self.frames is None else self.frames.squeeze(-1)
        return Spikes(self.value.squeeze(-1), frames, self.d, self.tau, self.events, offset=self.offset)


def clock_steps(*spikes: Spikes) -> int | None:
    """The steps an op on these operands runs: the longest T among the spiking ones (sites may have their
    own T, ``SpikingConfig.site_timesteps``); None when every operand is analog."""
    return max((s.d.numel() for s in spikes if not s.analog), default=None)


class SpikeSite(nn.Module):
    """Frozen neuron of one site. Buffers are non-persistent: the model's state_dict stays the base's."""

    def __init__(self, name: str, channels: int, runtime: SpikingRuntime) -> None:
        super().__init__()
        self.name = name
        self.channels = channels
        self.runtime = runtime
        self.levels = 2
        self.max_spikes: int | None = None
        #: channels the rotary embedding turns before this site (q and k); calibration gives each RoPE pair
        #: of them one tau (``rope_pairs``); 0 elsewhere
        self.rotary_dim = 0
        #: a softmax site's watcher of its analog map, which the blocked attention never materializes whole
        self.map_recorder: MapRecorder | None = None
        for key in ("d", "theta", "h", "tau", "offset"):
            self.register_buffer(key, torch.empty(0), persistent=False)
        self.register_buffer("v0", torch.zeros(()), persistent=False)

    @property
    def timesteps(self) -> int:
        return int(self.d.numel())

    @property
    def masked(self) -> bool:
        """Whether the runtime's early-spike mask applies here (Appendix D.7; the softmax map is exempt)."""
        return self.runtime.spike_mask is not None and site_type(self.name) not in MASK_EXEMPT_SITE_TYPES

    @property
    def spike_cap(self) -> int | None:
        """The most spikes per value: the neuron family's budget, tightened by the early-spike mask (only
        the first k spikes are kept)."""
        if not self.masked:
            return self.max_spikes
        mask = self.runtime.spike_mask
        return mask if self.max_spikes is None else min(mask, self.max_spikes)

    @property
    def ready(self) -> bool:
        return self.d.numel() > 0

    def set_neuron(self, d, theta, h, v0, tau, levels: int = 2, max_spikes: int | None = None) -> None:
        ref = self.v0
        self.d, self.theta, self.h = (t.to(ref.device, torch.float32) for t in (d, theta, h))
        self.v0 = torch.as_tensor(v0, dtype=torch.float32, device=ref.device).reshape(())
        self.tau = tau.to(ref.device, torch.float32).reshape(-1)
        if self.tau.numel() not in (1, self.channels):
            raise ValueError(f"site {self.name}: tau has {self.tau.numel()} values, expected 1 or {self.channels}")
        if (self.tau <= 0).any():
            raise ValueError(f"site {self.name}: tau must be > 0")
        self.levels, self.max_spikes = levels, max_spikes

    def set_offset(self, offset: torch.Tensor | None) -> None:
        """The mean coding error per channel that the decoded value gives back (None: no correction)."""
        if offset is None:
            self.offset = torch.empty(0, device=self.v0.device)
            return
        offset = offset.to(self.v0.device, torch.float32).reshape(-1)
        if offset.numel() != self.channels:
            raise ValueError(f"site {self.name}: offset has {offset.numel()} values, expected {self.channels}")
        self.offset = offset

    def _spikes(self, value, x, frames=None, events=None, weighted=None) -> Spikes:
        offset = self.offset.to(x.dtype) if self.offset.numel() else None
        if offset is not None:
            value = value - offset
        return Spikes(value, frames, self.d, self.tau.to(x.dtype), events, weighted, offset)

    def forward(self, x: torch.Tensor, need_frames: bool = False, rows: torch.Tensor | None = None) -> Spikes:
        """SN(x) (fused), SN(x) with its frames (timestep or ``need_frames``), or x itself (analog modes,
        or a site the recipe left out); ``rows`` (bool, broadcastable to x.shape[:-1]): the values whose
        spikes are counted in ``events`` (None: all; no count without a meter). Calibration observes x through a forward hook."""
        mode = self.runtime.mode
        if not self.runtime.spiking or not self.ready:   # sites left out of the config stay analog
            return Spikes(x)
        args = (x, self.tau, self.theta, self.h, self.d, self.v0, self.levels, self.spike_cap, rows)
        if need_frames or mode == "timestep":
            value, frames, events = site_frames(*args)
            return self._spikes(value, x, frames, events)
        if self.runtime.meter is None:   # nothing counts the spikes: the kernel without the count's reduction
            return self._spikes(site_value(*args[:-1]), x)
        value, events = site_code(*args)
        return self._spikes(value, x, events=events)

    def code_weighted(self, x: torch.Tensor, weights: torch.Tensor, rows: torch.Tensor | None = None) -> Spikes:
        """Fused SN(x) of a map [..., L, S] plus its spikes weighted per step and key column (``weights``
        [T, ..., S]; the P V count without the T full frames); ``rows`` (bool [..., L, 1], broadcastable to x):
        the query rows counted. Analog when the site is off."""
        if not self.runtime.spiking or not self.ready:
            return Spikes(x)
        value, events, weighted = site_code_weighted(x, self.tau, self.theta, self.h, self.d, self.v0, self.levels,
                                                     self.spike_cap, None if rows is None else rows[..., 0], weights)
        return self._spikes(value, x, events=events, weighted=weighted)

    def extra_repr(self) -> str:
        return f"{self.name}, channels={self.channels}, T={self.timesteps}, tau={'channel' if self.tau.numel() > 1 else 'tensor'}"
