"""Operations on spikes, in both executions (docs/DESIGN.md, "Two executions, one function").

fused:    ops run once on SN(x).
timestep: ops run on spike frames; a linear accumulates W s_t per step and scales by d_t,
          an activation-activation product uses A B = sum_t (S_A(t) B_t + A_t S_B(t) - A_t B_t)
          with S_A(t) = sum_{i<=t} A_i, a nonlinearity phi emits phi(I(<=t)) - phi(I(<=t-1)).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .site import Spikes


#: the time-stepped execution accumulates in float64: its sums of T partial results then match the
#: fused execution's single op to within the fused op's own rounding (fewer threshold flips)
ACCUMULATE = torch.float64


def _acc(t: torch.Tensor) -> torch.Tensor:
    return t.to(ACCUMULATE) if t.is_floating_point() and t.device.type != "mps" else t


def linear_steps(linear: nn.Linear, spikes: Spikes) -> torch.Tensor:
    """Per-step outputs [T, ..., out] = d_t * (W diag(tau)) s_t; the bias joins step 1."""
    weight = _acc(linear.weight) * _acc(spikes.tau)                 # per-channel tau folds into W
    steps = F.linear(_acc(spikes.frames), weight)
    steps = steps * _acc(spikes.d).view((-1,) + (1,) * (steps.ndim - 1))
    if linear.bias is not None:
        steps[0] = steps[0] + _acc(linear.bias)
    return steps


def apply_linear(linear: nn.Linear, spikes: Spikes) -> torch.Tensor:
    if spikes.frames is not None and spikes.d is not None:
        return linear_steps(linear, spikes).sum(0).to(spikes.value.dtype)
    return linear(spikes.value)


def _cumulative(weighted: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(weighted, dim=0)


def product_steps(a: Spikes, b: Spikes, mul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Per-step outputs of a bilinear ``mul`` (elementwise or matmul) of two spike trains."""
    wa, wb = _acc(a.weighted_frames()), _acc(b.weighted_frames())
    sa, sb = _cumulative(wa), _cumulative(wb)
    return mul(sa, wb) + mul(wa, sb) - mul(wa, wb)


def product(a: Spikes, b: Spikes, mul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
            timestep: bool) -> torch.Tensor:
    if timestep and not a.analog and not b.analog:
        return product_steps(a, b, mul).sum(0).to(a.value.dtype)
    return mul(a.value, b.value)


def nonlinearity_steps(phi: Callable[[torch.Tensor], torch.Tensor], steps: torch.Tensor) -> torch.Tensor:
    """phi(I(<=t)) - phi(I(<=t-1)) with phi(I(<=0)) := 0, for input steps [T, ...]."""
    cum = phi(_cumulative(_acc(steps)))
    return torch.cat([cum[:1], cum[1:] - cum[:-1]], dim=0)
