"""Bounded-memory sampling of activations while the calibration forward runs.

Bottom-k sampling: every streamed value gets a uniform random key and the ``capacity`` values with the
smallest keys are kept, which is a uniform sample without replacement of everything seen so far. Only
values whose key beats the current k-th key are ever gathered, so a huge tensor (a softmax map) costs
one random draw per element and a small top-k.
"""

from __future__ import annotations

import torch


class SiteReservoir:
    """At most ``capacity`` raw nonzero values of one site, their channel ids, and per-channel max|x|.

    Exact zeros are not sampled (they are coded exactly by every neuron; most are masked attention).
    """

    def __init__(self, name: str, capacity: int, channels: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"reservoir capacity must be >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.channels = channels
        self.values = torch.empty(0)
        self.channel_ids = torch.empty(0, dtype=torch.long)
        self.keys = torch.empty(0)
        self.channel_max = torch.zeros(channels)
        self.seen = 0
        self._gen = torch.Generator().manual_seed(seed)

    @property
    def filled(self) -> int:
        return self.values.numel()

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        """Stream in an activation tensor whose last dimension is the channel."""
        if x.shape[-1] != self.channels:
            raise ValueError(f"site {self.name}: expected {self.channels} channels, got {x.shape[-1]}")
        x = x.detach().reshape(-1, self.channels)
        # amax propagates NaN and Inf, so the per-channel maxima double as the finiteness check
        # (one pass over x instead of three)
        batch_max = x.abs().amax(0)
        if not bool(torch.isfinite(batch_max).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f"site {self.name}: {bad} non-finite activations (NaN/Inf) in calibration; "
                             "check the model dtype (fp16 overflow?) and the input text")
        self.channel_max = torch.maximum(self.channel_max, batch_max.float().cpu())
        flat = x.reshape(-1)
        positions = None
        if flat.numel() > 4 * self.capacity:
            # a huge map (softmax): a uniform draw of 4x capacity stands for it; batches of one site
            # have equal size, so the pooled sample stays uniform over the stream
            positions = torch.randint(0, flat.numel(), (4 * self.capacity,), generator=self._gen).to(flat.device)
            flat = flat[positions]
        keys = torch.rand(flat.numel(), generator=self._gen).to(flat.device)
        keys = keys.masked_fill(flat == 0, 2.0)               # zeros never win
        if self.filled >= self.capacity:
            keys = keys.masked_fill(keys >= self.keys.max().to(keys.device), 2.0)
        take = min(self.capacity, int((keys < 2.0).sum()))
        if take:
            new_keys, idx = torch.topk(keys, take, largest=False)
            keep = new_keys < 2.0
            new_keys, idx = new_keys[keep].cpu(), idx[keep]
            source = idx if positions is None else positions[idx]
            merged_keys = torch.cat([self.keys, new_keys])
            merged_vals = torch.cat([self.values, flat[idx].float().cpu()])
            merged_ch = torch.cat([self.channel_ids, (source % self.channels).cpu()])
            if merged_keys.numel() > self.capacity:
                merged_keys, order = torch.topk(merged_keys, self.capacity, largest=False)
                merged_vals, merged_ch = merged_vals[order], merged_ch[order]
            self.keys, self.values, self.channel_ids = merged_keys, merged_vals, merged_ch
        self.seen += x.numel()

    def normalized(self, per_channel: bool, headroom: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(|x| / tau, tau): tau = headroom x (per-channel max|x| or the tensor's max|x|); values above tau
        saturate, so ``headroom > 1`` leaves room for values larger than any seen in calibration."""
        if self.filled == 0:
            raise ValueError(f"site {self.name}: no nonzero activations were recorded during calibration")
        if headroom < 1.0:
            raise ValueError(f"tau headroom must be >= 1, got {headroom}")
        floor = torch.finfo(torch.float32).tiny
        if per_channel:
            tau = self.channel_max.clamp(min=floor) * headroom
            return self.values.abs() / tau[self.channel_ids], tau
        tau = self.channel_max.max().clamp(min=floor).reshape(1) * headroom
        return self.values.abs() / tau, tau

    def normalized_maxima(self, per_channel: bool, headroom: float = 1.0) -> torch.Tensor:
        """The calibration maxima in the units of :meth:`normalized` (1/headroom each; one per channel)."""
        count = self.channels if per_channel else 1
        return torch.full((count,), 1.0 / headroom)
