"""One tau per RoPE pair at the q and k sites (docs/DESIGN.md, "Outliers": one tau per RoPE pair).

q and k are sites after the rotary embedding, which turns channels i and i + r/2 of a head (r the rotary
dimension; transformers' ``rotate_half`` layout) by an angle that grows with the position. Over 512-token
calibration windows the slow pairs turn little, so one channel of a pair can look small while its partner
holds the pair's whole norm; at a position a few thousand tokens further the norm has moved to the small
channel, which then clips at its tau. The rotation keeps the pair's norm, so the two channels share one
tau: the larger of their two calibration maxima.
"""

from __future__ import annotations

from typing import Any

import torch


def rotary_dim(config: Any, head_dim: int) -> int:
    """The channels of a head the rotary embedding turns: head_dim x the partial rotary factor (found in
    ``rope_parameters`` on recent transformers, on the config itself on older ones); 0 if it is not even."""
    params = getattr(config, "rope_parameters", None)
    factor = params.get("partial_rotary_factor") if isinstance(params, dict) else None
    if factor is None:
        factor = getattr(config, "partial_rotary_factor", None) or 1.0
    dim = int(head_dim * factor)
    return dim if 0 < dim <= head_dim and dim % 2 == 0 else 0


def tie_rotary_pairs(maxima: torch.Tensor, rotary: int) -> torch.Tensor:
    """Per-channel maxima [head_dim] with channels i and i + rotary/2 (i < rotary/2) both set to the larger
    of the two; the channels past ``rotary`` (partial rotary) keep their own."""
    if not rotary:
        return maxima
    half = rotary // 2
    pair = torch.maximum(maxima[:half], maxima[half:rotary])
    return torch.cat([pair, pair, maxima[rotary:]])
