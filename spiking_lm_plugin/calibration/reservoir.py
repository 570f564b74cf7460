"""Bounded-memory sampling of activations while the calibration forward runs.

Bottom-k sampling without its selection. Bottom-k gives every streamed value a uniform random key and keeps
the ``capacity`` values with the smallest keys: a uniform sample without replacement of everything seen so far.
The keys never need to exist: given the k-th smallest key w of what is kept, the other kept keys are iid
uniform below w, so a new value can only win with probability w (a thinning), and among the k - 1 + c values
below w after c winners arrive (the value holding w drops out) the k smallest are a uniformly random k-subset,
with the new k-th key w x Beta(k, c). Keeping the sample in random order makes the value holding w any one of
them (the last) and any prefix of the sample a uniform sample too. A batch is a few reductions, one binomial
draw, a gather of the candidates and one random permutation: no sort or k-th value search, and nothing of a
huge tensor's (a softmax map's) size copied but a strided view made contiguous (q / k / v after the transpose).
"""

from __future__ import annotations

import random

import torch

from ..rope_pairs import tie_rotary_pairs


def _channel_extremes(x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """Per-channel max|x| over the recorded rows: max(amax, -amin), two plain reductions (|x| would be a
    copy of x, and a reduction over dim 0 of an [N, 1] tensor is serial on CPU); NaN and Inf propagate."""
    if rows is not None:
        x = torch.where(rows.unsqueeze(-1), x, x.new_zeros(()))
    if x.shape[-1] == 1:
        return torch.maximum(x.amax(), -x.amin()).reshape(1)
    dims = tuple(range(x.ndim - 1))
    return torch.maximum(x.amax(dim=dims), -x.amin(dim=dims))


class SiteReservoir:
    """At most ``capacity`` raw nonzero values of one site, their channel ids, and per-channel max|x|.

    Exact zeros are not sampled (they are coded exactly by every neuron; most are masked attention).
    ``values`` / ``channel_ids`` are in random order, so any prefix of them is itself a uniform sample.
    """

    def __init__(self, name: str, capacity: int, channels: int, seed: int = 0, rotary_dim: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"reservoir capacity must be >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.channels = channels
        #: the channels a rotary embedding turned before the site (``rope_pairs.rotary_dim``; 0: none)
        self.rotary_dim = rotary_dim
        self.values = torch.empty(0)
        self.channel_ids = torch.empty(0, dtype=torch.long)
        #: the k-th smallest key of the values kept (1 until the reservoir is full)
        self.worst = 1.0
        self.channel_max = torch.zeros(channels)
        self.seen = 0
        self._gen = torch.Generator().manual_seed(seed)
        self._beta = random.Random(seed)

    @property
    def filled(self) -> int:
        return self.values.numel()

    @property
    def full(self) -> bool:
        return self.filled >= self.capacity

    @torch.no_grad()
    def add(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Stream in an activation tensor whose last dimension is the channel; ``rows`` (bool, the shape of
        ``x`` without its channel axis; an expanded view is fine) marks the rows to record, None all."""
        if x.shape[-1] != self.channels:
            raise ValueError(f"site {self.name}: expected {self.channels} channels, got {x.shape[-1]}")
        x = x.detach()
        self.observe_max(_channel_extremes(x, rows), x)
        flat = x.reshape(-1)
        positions = self.draw(flat.numel(), flat.device)
        kept = None
        if rows is not None:
            row_kept = rows.reshape(-1)
            kept = row_kept.repeat_interleave(self.channels) if positions is None else row_kept[positions // self.channels]
        self.offer(flat if positions is None else flat[positions], positions, kept)
        self.seen += flat.numel() if rows is None else int(rows.sum()) * self.channels

    def observe_max(self, batch_max: torch.Tensor, x: torch.Tensor | None = None) -> None:
        """Fold one batch's per-channel max|x| into the maxima (one line of error on NaN / Inf)."""
        if not bool(torch.isfinite(batch_max).all()):
            bad = "" if x is None else f"{int((~torch.isfinite(x)).sum())} "
            raise ValueError(f"site {self.name}: {bad}non-finite activations (NaN/Inf) in calibration; "
                             "check the model dtype (fp16 overflow?) and the input text")
        self.channel_max = torch.maximum(self.channel_max, batch_max.float().cpu())

    def draw(self, numel: int, device: torch.device) -> torch.Tensor | None:
        """The flat positions to offer of a batch of ``numel`` values; None: every value, in order.

        A large tensor (above 4x capacity) is stood for by a uniform draw of 4x capacity positions (batches of one
        site have equal size, so the pooled sample stays uniform over the stream); once the reservoir is full
        only the draws whose key would beat w are made: Binomial(4 capacity, w) of them."""
        if numel <= 4 * self.capacity:
            return None
        draws = 4 * self.capacity
        if self.full:
            draws = int(torch.binomial(torch.tensor(float(draws)), torch.tensor(self.worst), generator=self._gen))
        return torch.randint(0, numel, (draws,), generator=self._gen).to(device)

    def offer(self, candidates: torch.Tensor, positions: torch.Tensor | None, kept: torch.Tensor | None = None) -> None:
        """Merge the values at :meth:`draw`'s positions (``kept``: False for values of rows not to record)."""
        valid = candidates != 0                                  # zeros never win
        if kept is not None:
            valid &= kept
        if positions is None and self.full:                       # a whole tensor: each value beats w with chance w
            valid &= torch.rand(candidates.numel(), generator=self._gen).to(valid.device) < self.worst
        chosen = valid.nonzero().squeeze(1)
        arrived = chosen.numel()
        if not arrived:
            return
        k = self.capacity
        if positions is not None and not self.filled:
            # iid draws into an empty reservoir: the first k winners are a uniform k-subset in random order
            first = chosen[:k]
            self.values, self.channel_ids = candidates[first].float().cpu(), (positions[first] % self.channels).cpu()
            if arrived >= k:
                self.worst = self._beta.betavariate(k, arrived - k + 1)
            return
        source = chosen if positions is None else positions[chosen]
        new_values = candidates[chosen].float().cpu()
        new_channels = (source % self.channels).cpu()
        values, channels, was_full = self.values, self.channel_ids, self.full
        if was_full:                                              # the value holding w drops out
            values, channels = values[:-1], channels[:-1]
        pool = values.numel() + arrived
        order = torch.randperm(pool, generator=self._gen)[:k]
        self.values = torch.cat([values, new_values])[order]
        self.channel_ids = torch.cat([channels, new_channels])[order]
        if was_full:                                              # the k-th of k - 1 + c uniforms below w
            self.worst *= self._beta.betavariate(k, arrived)
        elif pool >= k:                                           # the k-th of pool uniforms
            self.worst = self._beta.betavariate(k, pool - k + 1)

    def normalized(self, per_channel: bool, headroom: float = 1.0, rope_pairs: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(|x| / tau, tau): tau = headroom x (per-channel max|x| or the tensor's max|x|); values above tau
        saturate, so ``headroom > 1`` leaves room for values larger than any seen in calibration.
        ``rope_pairs``: per channel, the two channels of each RoPE pair share the larger maximum."""
        if self.filled == 0:
            raise ValueError(f"site {self.name}: no nonzero activations were recorded during calibration")
        if headroom < 1.0:
            raise ValueError(f"tau headroom must be >= 1, got {headroom}")
        floor = torch.finfo(torch.float32).tiny
        if per_channel:
            maxima = tie_rotary_pairs(self.channel_max, self.rotary_dim) if rope_pairs else self.channel_max
            tau = maxima.clamp(min=floor) * headroom
            return self.values.abs() / tau[self.channel_ids], tau
        tau = self.channel_max.max().clamp(min=floor).reshape(1) * headroom
        return self.values.abs() / tau, tau

    def normalized_maxima(self, per_channel: bool, headroom: float = 1.0) -> torch.Tensor:
        """The calibration maxima in the units of :meth:`normalized` (1/headroom each; one per channel)."""
        count = self.channels if per_channel else 1
        return torch.full((count,), 1.0 / headroom)
