"""The attention mass the softmax neurons round away, given back (``SpikingConfig.mass_correction``).

At low T most entries of an attention row are below the softmax neuron's finest step and code as 0, so a
spiked row sums to less than 1 (at T = 6 on SmolLM2, 6-50% of a row's mass sits in entries below 1/128).
The analog row sums to 1 exactly, so the lost mass of row i is known from the spikes alone:
m_i = 1 - sum_j P^_ij. It is given back spread evenly over the keys the row may attend to:
out_i += m_i * mean_{j allowed for i} V^_j (docs/DESIGN.md, "Attention mass correction"). Both executions
compute it from the decoded P^ and V^, so fused == timestep still holds. The block emits one event per
output element; its price (a cost the ANN does not have) is the cost model's.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..energy.statistics import interval_sums, intervals

GroupedProduct = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mean_allowed_values(v: torch.Tensor, allowed: torch.Tensor, heads: int, pv: GroupedProduct) -> torch.Tensor:
    """Mean over the allowed keys of each query row: v [B, Hkv, S, D], allowed [B, 1|H, L, S] bool ->
    [B, H, L, D]. Contiguous key runs (causal, sliding window, padding) use prefix sums over the keys; any
    other mask the attention's own grouped P V product ``pv`` with the mask as the map."""
    bounds = intervals(allowed)
    if bounds is not None:
        return mean_over_intervals(v, bounds, heads)
    weights = allowed.to(v.dtype).expand(v.shape[0], heads, *allowed.shape[-2:])
    return pv(weights, v) / weights.sum(-1, keepdim=True).clamp(min=1)


def mean_over_intervals(v: torch.Tensor, bounds: tuple[torch.Tensor, torch.Tensor], heads: int) -> torch.Tensor:
    """Mean of v [B, Hkv, S, D] over each query row's keys [first, end) (``bounds`` [B, 1, L] each, from
    ``intervals``) -> [B, H, L, D], by prefix sums over the keys: computed once per layer for all query rows,
    the blocks of rows take slices of it."""
    first, end = bounds
    count = (end - first).clamp(min=1)[..., None].to(v.dtype)                # [B, 1, L, 1]
    mean = interval_sums(v, first, end) / count                                # [B, Hkv, L, D]
    groups = heads // v.shape[1]
    return mean.repeat_interleave(groups, dim=1) if groups > 1 else mean


def lost_mass_term(p: torch.Tensor, mean_values: torch.Tensor) -> torch.Tensor:
    """(1 - sum_j P^_ij) * mean_allowed V^ for a spiked map p [B, H, L, S] and the mean of the values over
    each row's allowed keys [B, H, L, D] (:func:`mean_allowed_values`)."""
    return (1.0 - p.sum(-1, keepdim=True)) * mean_values.to(p.dtype)
