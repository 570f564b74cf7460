"""softmax(Q K^T s + M) V a block of queries at a time (docs/DESIGN.md, "Fitting" and "Two executions, one
function").

Every op after the q, k and v sites is local to a query row, so nothing needs the whole [B, H, L, S] map at
once. Each block of query rows reads only the leading keys any of its rows may attend to (under a causal
mask about half of the map is never computed), and its scores, softmax and P V stay small enough for the
cache. The values are the whole map's: the keys a block skips are masked for every row of it, so they would
add exp(-inf) = 0 to every row sum. :func:`blocked_attention` is the analog map's loop; the spiking
executions run theirs in the attention module with the same :func:`query_blocks`.

A calibration reservoir still samples the analog map: a :class:`MapRecorder` names the flat positions of the
whole map it wants before the forward, and gets their values and every row's maximum afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

#: query rows per block: a 128 x 513 block of SmolLM2's 9 heads x 4 windows is ~9 MB of scores
QUERY_BLOCK = 128


class MapRecorder(Protocol):
    """What watches an analog softmax map that is never materialized whole."""

    def positions(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """Flat indices into the [B, H, L, S] map whose values :meth:`record` should receive."""

    def record(self, values: torch.Tensor, row_max: torch.Tensor) -> None:
        """The map's values at :meth:`positions` (0 where masked) and each row's maximum [B, H, L]."""


def key_widths(allowed: torch.Tensor, block: int = QUERY_BLOCK) -> list[int]:
    """Per block of query rows of ``allowed`` [B, 1, L, S]: how many leading keys any of its rows may read.
    A block holding a fully masked row reads all S keys, so that row's softmax is the dense one too."""
    keys = allowed.shape[-1]
    rows = allowed.any(0)[0]                                             # [L, S]: a key any sequence reads
    last = torch.where(rows, torch.arange(1, keys + 1, device=rows.device), 0).amax(-1)   # [L]
    widths = last.masked_fill((~allowed.any(-1)).any(0)[0], keys)
    pad = (-widths.numel()) % block
    if pad:
        widths = torch.cat([widths, widths.new_ones(pad)])
    return widths.view(-1, block).amax(-1).tolist()


def query_blocks(widths: list[int], length: int, block: int = QUERY_BLOCK) -> list[tuple[int, int, int]]:
    """(first row, end row, keys read) of each block of ``length`` query rows, ``widths`` from :func:`key_widths`."""
    return [(start, min(length, start + block), widths[n]) for n, start in enumerate(range(0, length, block))]


@dataclass(frozen=True)
class _Picks:
    """Flat positions into a [B, H, L, S] map, split into (batch, head), query row and key."""

    flat: torch.Tensor
    batch_head: torch.Tensor
    row: torch.Tensor
    key: torch.Tensor
    block: torch.Tensor

    @classmethod
    def of(cls, flat: torch.Tensor, shape: torch.Size, block: int) -> "_Picks":
        length, keys = shape[-2], shape[-1]
        rows = flat // keys
        return cls(flat, rows // length, rows % length, flat % keys, (rows % length) // block)

    def gather(self, n: int, probs: torch.Tensor, start: int, width: int, heads: int, into: torch.Tensor) -> None:
        """Write the values of the picks in block ``n`` (rows from ``start``, keys below ``width``) into ``into``;
        the picks past ``width`` stay 0 (masked for every row of the block)."""
        inside = (self.block == n).nonzero().squeeze(1)
        inside = inside[self.key[inside] < width]
        bh = self.batch_head[inside]
        into[inside] = probs[bh // heads, bh % heads, self.row[inside] - start, self.key[inside]].to(into.dtype)


def record_whole(recorder: MapRecorder, probs: torch.Tensor) -> None:
    """Feed a recorder from a whole analog map [B, H, L, S] (the dense path, when it runs while recording)."""
    flat = recorder.positions(probs.shape, probs.device)
    recorder.record(probs.reshape(-1)[flat], probs.amax(-1))


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float, additive: torch.Tensor,
                      widths: list[int], normalize: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      matmul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      recorder: MapRecorder | None = None, block: int = QUERY_BLOCK) -> torch.Tensor:
    """P V [B, H, L, D] for q [B, H, L, D], k / v [B, Hkv, S, D]: ``normalize(scores, mask)`` is the softmax
    (with the model's soft-capping), ``matmul(a, b)`` the grouped-query product; ``widths`` from :func:`key_widths`."""
    bsz, heads, length, _ = q.shape
    shape = torch.Size((bsz, heads, length, k.shape[-2]))
    picks = None if recorder is None else _Picks.of(recorder.positions(shape, q.device), shape, block)
    picked = None if picks is None else q.new_zeros(picks.flat.numel())
    row_max = []
    outputs = []
    for n, (start, stop, width) in enumerate(query_blocks(widths, length, block)):
        scores = matmul(q[:, :, start:stop], k[:, :, :width].transpose(-1, -2)).mul_(scaling)
        probs = normalize(scores, additive[..., start:stop, :width])
        if picks is not None:
            row_max.append(probs.amax(-1))
            picks.gather(n, probs, start, width, heads, picked)
        outputs.append(matmul(probs, v[:, :, :width]))
    if recorder is not None:
        recorder.record(picked, torch.cat(row_max, dim=-1))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
