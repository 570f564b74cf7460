"""Operations on spikes, in both executions (docs/DESIGN.md, "Two executions, one function").

fused:    ops run once on SN(x).
timestep: ops run on spike frames; a linear accumulates W s_t per step and scales by d_t,
          an activation-activation product emits S_A(t) S_B(t) - S_A(t-1) S_B(t-1) at step t
          with S_A(t) = sum_{i<=t} A_i, a nonlinearity phi emits phi(I(<=t)) - phi(I(<=t-1)).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..weight_quantization import dense_weight
from .site import Spikes


def step_dtype(t: torch.Tensor) -> torch.dtype:
    """What the time-stepped ops compute in: float64 for a float64 model (the two executions are then the
    same function to 1e-10, tested), float32 otherwise (bf16 steps would lose the small per-step terms;
    fp32 sums T partial results where the fused op makes one, so a value within an ulp of a threshold can
    fire differently: docs/BENCHMARKS.md gives the tolerance)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def running_sum_(steps: torch.Tensor) -> torch.Tensor:
    """S(t) = sum_{i<=t} steps[i] over the step axis 0, in place: T - 1 additions of whole frames, several
    times faster on CPU than ``torch.cumsum`` along a leading axis (which walks the T values of each element
    one element at a time)."""
    for t in range(1, steps.shape[0]):
        steps[t] += steps[t - 1]
    return steps


def accumulated_frames(spikes: Spikes, dtype: torch.dtype, steps: int) -> torch.Tensor:
    """S(t) = tau sum_{i<=t} d_i s_i [steps, ...] of a spike train in ``dtype``, in one pass over its frames
    (each step one multiply-add onto the last sum, no weighted copy of the frames); a train with fewer steps
    holds its final sum over the rest (it has sent all its spikes)."""
    frames, scale = spikes.frames, spikes.step_scales(dtype)
    out = torch.empty((steps,) + tuple(frames.shape[1:]), dtype=dtype, device=frames.device)
    torch.mul(frames[0].to(dtype), scale[0], out=out[0])
    for t in range(1, steps):
        if t < frames.shape[0]:
            torch.addcmul(out[t - 1], frames[t].to(dtype), scale[t], out=out[t])
        else:
            out[t] = out[t - 1]
    return out


def linear_steps(linear: nn.Linear, spikes: Spikes) -> torch.Tensor:
    """Per-step outputs [T, ..., out] = d_t * (W diag(tau)) s_t, all T steps in one matmul; the bias (and
    -W offset, a bias-corrected site's) joins step 1. The step weights and tau scale the frames before the matmul, unless scaling W by tau and the
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
    if spikes.offset is not None:
        steps[0] = steps[0] - F.linear(spikes.offset.to(dtype), weight)
    return steps


def apply_linear(linear: nn.Linear, spikes: Spikes) -> torch.Tensor:
    if spikes.frames is not None and spikes.d is not None:
        return linear_steps(linear, spikes).sum(0).to(spikes.value.dtype)
    return linear(spikes.value)


def product_steps(a: Spikes, b: Spikes, mul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Per-step outputs of a bilinear ``mul`` (elementwise or matmul) of two spike trains: what arrives at
    step t, S_A(t) S_B(t) - S_A(t-1) S_B(t-1) (= S_A(t) B_t + A_t S_B(t-1)), as differences of the
    accumulated products: one product per step instead of two."""
    return step_differences(product_accumulated(a, b, mul))


def product_accumulated(a: Spikes, b: Spikes, mul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The accumulated product after each step, [T, ...] = S_A(t) S_B(t): what the per-step outputs of
    :func:`product_steps` sum to by step t (also what a nonlinearity reading the product takes as its
    integrated input); one product per step."""
    dtype = step_dtype(a.value)
    steps = max(a.frames.shape[0], b.frames.shape[0])     # one clock: the longer train sets the steps
    return mul(accumulated_frames(a, dtype, steps), accumulated_frames(b, dtype, steps))


def product(a: Spikes, b: Spikes, mul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
            timestep: bool) -> torch.Tensor:
    if timestep and not a.analog and not b.analog:
        return product_steps(a, b, mul).sum(0).to(a.value.dtype)
    return mul(a.value, b.value)


def nonlinearity_steps(phi: Callable[[torch.Tensor], torch.Tensor], steps: torch.Tensor) -> torch.Tensor:
    """phi(I(<=t)) - phi(I(<=t-1)) with phi(I(<=0)) := 0, for input steps [T, ...]; ``steps`` (fresh per-step
    outputs of the op before) is overwritten with the integrated input where it is already in the step dtype."""
    return nonlinearity_of_accumulated(phi, running_sum_(steps.to(step_dtype(steps))))


def nonlinearity_of_accumulated(phi: Callable[[torch.Tensor], torch.Tensor], accumulated: torch.Tensor) -> torch.Tensor:
    """The per-step outputs phi(I(<=t)) - phi(I(<=t-1)) of a nonlinearity whose integrated input after
    each step is ``accumulated`` [T, ...]."""
    return step_differences(phi(accumulated))


def step_differences(accumulated: torch.Tensor) -> torch.Tensor:
    """out[t] = accumulated[t] - accumulated[t-1] (out[0] = accumulated[0]), in place: what arrives at each
    step of a quantity given after each step."""
    for t in range(accumulated.shape[0] - 1, 0, -1):   # backwards, so each difference reads an unchanged [t - 1]
        accumulated[t] -= accumulated[t - 1]
    return accumulated
