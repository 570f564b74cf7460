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

from ..energy.statistics import one_clock
from ..weight_quantization import dense_weight
from .site import Spikes


def step_dtype(t: torch.Tensor) -> torch.dtype:
    """What the time-stepped ops compute in: float64 for a float64 model (the two executions are then the
    same function to 1e-10, tested), float32 otherwise (bf16 steps would lose the small per-step terms;
    fp32 sums T partial results where the fused op makes one, so a value within an ulp of a threshold can
    fire differently: docs/BENCHMARKS.md gives the tolerance)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def linear_steps(linear: nn.Linear, spikes: Spikes) -> torch.Tensor:
    """Per-step outputs [T, ..., out] = d_t * (W diag(tau)) s_t, all T steps in one matmul; the bias joins
    step 1. The step weights and tau scale the frames before the matmul, unless scaling W by tau and the
    outputs by d_t touches fewer values (a wide input feeding a narrow output)."""
    dtype = step_dtype(spikes.value)
    weight = dense_weight(linear, dtype)     # a torchao weight dequantized: its subclass has no per-step ops
    frames = spikes.frames
    outputs = frames.numel() // frames.shape[-1] * weight.shape[0]
    if frames.numel() <= weight.numel() + outputs:
        steps = F.linear(spikes.weighted_frames(dtype), weight)
    else:
        steps = F.linear(frames.to(dtype), weight * spikes.tau.to(dtype))
        steps = steps * spikes.d.to(dtype).view((-1,) + (1,) * (steps.ndim - 1))
    if linear.bias is not None:
        steps[0] = steps[0] + linear.bias.to(dtype)
    return steps


def apply_linear(linear: nn.Linear, spikes: Spikes) -> torch.Tensor:
    if spikes.frames is not None and spikes.d is not None:
        return linear_steps(linear, spikes).sum(0).to(spikes.value.dtype)
    return linear(spikes.value)


def product_steps(a: Spikes, b: Spikes, mul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Per-step outputs of a bilinear ``mul`` (elementwise or matmul) of two spike trains: step t adds
    S_A(t) B_t + A_t S_B(t-1), what arrives at t with everything that came before it (the same as
    S_A(t) B_t + A_t S_B(t) - A_t B_t, one product fewer)."""
    dtype = step_dtype(a.value)
    wa, wb = one_clock(a.weighted_frames(dtype), b.weighted_frames(dtype))
    sa = torch.cumsum(wa, dim=0)
    sb_before = torch.cumsum(wb, dim=0) - wb
    return mul(sa, wb) + mul(wa, sb_before)


def product_accumulated(a: Spikes, b: Spikes, mul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The accumulated product after each step, [T, ...] = S_A(t) S_B(t): what the per-step outputs of
    :func:`product_steps` sum to by step t, for a nonlinearity that reads its integrated input (one
    product per step instead of two, and no running sum over T maps)."""
    dtype = step_dtype(a.value)
    wa, wb = one_clock(a.weighted_frames(dtype), b.weighted_frames(dtype))
    return mul(torch.cumsum(wa, dim=0), torch.cumsum(wb, dim=0))


def product(a: Spikes, b: Spikes, mul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
            timestep: bool) -> torch.Tensor:
    if timestep and not a.analog and not b.analog:
        return product_steps(a, b, mul).sum(0).to(a.value.dtype)
    return mul(a.value, b.value)


def nonlinearity_steps(phi: Callable[[torch.Tensor], torch.Tensor], steps: torch.Tensor) -> torch.Tensor:
    """phi(I(<=t)) - phi(I(<=t-1)) with phi(I(<=0)) := 0, for input steps [T, ...]."""
    return nonlinearity_of_accumulated(phi, torch.cumsum(steps.to(step_dtype(steps)), dim=0))


def nonlinearity_of_accumulated(phi: Callable[[torch.Tensor], torch.Tensor], accumulated: torch.Tensor) -> torch.Tensor:
    """The per-step outputs phi(I(<=t)) - phi(I(<=t-1)) of a nonlinearity whose integrated input after
    each step is ``accumulated`` [T, ...]."""
    out = phi(accumulated)
    out[1:] -= out[:-1].clone()
    return out
