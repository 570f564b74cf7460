"""Bounded-memory sampling of activations while the calibration forward runs.

Bottom-k sampling: every streamed value gets a uniform random key and the ``capacity`` values with the
smallest keys are kept, which is a uniform sample without replacement of everything seen so far. Only
values whose key beats the current k-th key are ever gathered, so a huge tensor (a softmax map) costs
a few reductions, one random draw per candidate and a k-th value search; nothing of the tensor's size is
copied but a strided view made contiguous (q / k / v after the head transpose).
"""

from __future__ import annotations

import torch


def _channel_extremes(x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """Per-channel max|x| over the recorded rows: max(amax, -amin), two plain reductions (|x| would be a
    copy of x, and a reduction over dim 0 of an [N, 1] tensor is serial on CPU); NaN and Inf propagate."""
    if rows is not None:
        x = torch.where(rows.unsqueeze(-1), x, x.new_zeros(()))
    if x.shape[-1] == 1:
        return torch.maximum(x.amax(), -x.amin()).reshape(1)
    dims = tuple(range(x.ndim - 1))
    return torch.maximum(x.amax(dim=dims), -x.amin(dim=dims))


def _smallest(keys: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` smallest keys below 2 (2 marks a value that may not win), in no particular order:
    a k-th value search is several times cheaper than a sorted top-k; ties at the k-th key fall back to it."""
    valid = keys < 2.0
    if int(valid.sum()) <= k:
        return valid.nonzero().squeeze(1)
    chosen = (keys <= torch.kthvalue(keys, k).values).nonzero().squeeze(1)
    if chosen.numel() != k:
        chosen = torch.topk(keys, k, largest=False, sorted=False).indices
    return chosen


class SiteReservoir:
    """At most ``capacity`` raw nonzero values of one site, their channel ids, and per-channel max|x|.

    Exact zeros are not sampled (they are coded exactly by every neuron; most are masked attention).
    ``values`` / ``channel_ids`` are read in key order, so any prefix of them is itself a uniform sample.
    """

    def __init__(self, name: str, capacity: int, channels: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"reservoir capacity must be >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.channels = channels
        self._values = torch.empty(0)
        self._channel_ids = torch.empty(0, dtype=torch.long)
        self._keys = torch.empty(0)
        self._in_key_order = True
        self.channel_max = torch.zeros(channels)
        self.seen = 0
        self._gen = torch.Generator().manual_seed(seed)

    @property
    def filled(self) -> int:
        return self._values.numel()

    def _key_order(self) -> None:
        if not self._in_key_order:
            self._keys, order = torch.sort(self._keys)
            self._values, self._channel_ids = self._values[order], self._channel_ids[order]
            self._in_key_order = True

    @property
    def values(self) -> torch.Tensor:
        self._key_order()
        return self._values

    @property
    def channel_ids(self) -> torch.Tensor:
        self._key_order()
        return self._channel_ids

    @torch.no_grad()
    def add(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Stream in an activation tensor whose last dimension is the channel; ``rows`` (bool, the shape of
        ``x`` without its channel axis; an expanded view is fine) marks the rows to record, None all."""
        if x.shape[-1] != self.channels:
            raise ValueError(f"site {self.name}: expected {self.channels} channels, got {x.shape[-1]}")
        x = x.detach()
        batch_max = _channel_extremes(x, rows)
        if not bool(torch.isfinite(batch_max).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f"site {self.name}: {bad} non-finite activations (NaN/Inf) in calibration; "
                             "check the model dtype (fp16 overflow?) and the input text")
        self.channel_max = torch.maximum(self.channel_max, batch_max.float().cpu())
        numel = x.numel()
        flat = x.reshape(-1)
        full = self.filled >= self.capacity
        worst = float(self._keys.max()) if full else 1.0
        if numel > 4 * self.capacity:
            # a large tensor: a uniform draw of 4x capacity positions stands for it (batches of one site have
            # equal size, so the pooled sample stays uniform over the stream). Once the reservoir is full only
            # keys below its worst key can win, so only those draws are made: Binomial(4 capacity, worst) of
            # them, keys uniform below it, the same law as drawing all and discarding the losers
            draws = 4 * self.capacity
            if full:
                draws = int(torch.binomial(torch.tensor(float(draws)), torch.tensor(worst), generator=self._gen))
            positions = torch.randint(0, numel, (draws,), generator=self._gen).to(flat.device)
            candidates = flat[positions]
            keys = (torch.rand(draws, generator=self._gen) * worst).to(flat.device)
        else:
            positions, candidates = None, flat
            keys = torch.rand(numel, generator=self._gen).to(flat.device)
        dropped = candidates == 0                               # zeros never win
        if rows is not None:
            row_kept = rows.reshape(-1)
            dropped |= ~(row_kept if positions is None else row_kept[positions // self.channels]).repeat_interleave(
                self.channels if positions is None else 1)
        if full:
            dropped |= keys >= worst
        keys = keys.masked_fill(dropped, 2.0)
        chosen = _smallest(keys, self.capacity)
        if chosen.numel():
            source = chosen if positions is None else positions[chosen]
            merged_keys = torch.cat([self._keys, keys[chosen].cpu()])
            merged_values = torch.cat([self._values, candidates[chosen].float().cpu()])
            merged_channels = torch.cat([self._channel_ids, (source % self.channels).cpu()])
            if merged_keys.numel() > self.capacity:
                kept = _smallest(merged_keys, self.capacity)
                merged_keys, merged_values, merged_channels = merged_keys[kept], merged_values[kept], merged_channels[kept]
            self._keys, self._values, self._channel_ids = merged_keys, merged_values, merged_channels
            self._in_key_order = False
        self.seen += numel if rows is None else int(rows.sum()) * self.channels

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
