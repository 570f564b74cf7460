"""Phase-coding neuron dynamics (paper eq. 1-3, 7-8), shared by fitting and by the model.

All quantities are in units of tau: ``u = |x| / tau``. With thresholds ``theta_t``, resets ``h_t``
and output weights ``d_t`` (t = 1..T)::

    v_1 = u + v0                      (eq. 1: the neuron integrates its whole input first)
    s_t = H(v_t - theta_t)            (eq. 2; with L > 2 levels: clamp(floor((v_t - theta_t)/h_t) + 1, 0, L-1))
    v_{t+1} = v_t - h_t s_t           (eq. 3, decoupled reset)
    SN(u) = sum_t d_t s_t             (eq. 7-8)

Optional spike budget (``max_spikes``: an int, or a tensor broadcasting against ``u`` with +inf for no
budget) gives the two-spike and TTFS neurons and the early-spike mask inside a fit. ``theta``/``h``/``d`` are
indexable by step and each item broadcasts against ``u`` (scalars for one site, ``[S, 1]`` columns
when fitting ``S`` sites at once).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

StepSpikes = Callable[[torch.Tensor], torch.Tensor]


def _heaviside(z: torch.Tensor) -> torch.Tensor:
    return (z >= 0).to(z.dtype)


def fire(v: torch.Tensor, theta_t, h_t, fired: torch.Tensor | None, levels: int, max_spikes: int | None,
         step: StepSpikes = _heaviside, scale_t=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One time step (eq. 2-3): the spike s_t, the reset membrane v_{t+1} and the running spike count.
    ``scale_t`` (> 0) only rescales what a surrogate sees; the forward step is unchanged."""
    z = v - theta_t if scale_t is None else (v - theta_t) / scale_t
    if levels == 2:
        s = step(z)
    else:
        z = v - theta_t
        s = torch.clamp(torch.floor(z / h_t) + 1, 0, levels - 1)
    if max_spikes is not None and (isinstance(max_spikes, torch.Tensor) or max_spikes > 0):
        fired = torch.zeros_like(v) if fired is None else fired
        s = s * (fired < max_spikes).to(s.dtype)
        fired = fired + (s > 0).to(s.dtype)
    return s, v - h_t * s, fired


def spike_steps(
    u: torch.Tensor,
    theta: Sequence[torch.Tensor],
    h: Sequence[torch.Tensor],
    v0: torch.Tensor | float,
    *,
    levels: int = 2,
    max_spikes: int | None = None,
    surrogate: StepSpikes | None = None,
    surrogate_scale: Sequence[torch.Tensor] | None = None,
):
    """Yield the spike magnitude s_t (>= 0) of each step for normalized input ``u`` (eq. 1-3).
    ``surrogate_scale[t]``: the width unit of step t's surrogate (e.g. its weight d_t)."""
    step = surrogate if surrogate is not None else _heaviside
    v = u + v0
    fired = None
    for t in range(len(theta)):
        scale = surrogate_scale[t] if surrogate is not None and surrogate_scale is not None else None
        s, v, fired = fire(v, theta[t], h[t], fired, levels, max_spikes, step, scale)
        yield s


def phase_code(
    u: torch.Tensor,
    theta: Sequence[torch.Tensor],
    h: Sequence[torch.Tensor],
    d: Sequence[torch.Tensor],
    v0: torch.Tensor | float,
    *,
    levels: int = 2,
    max_spikes: int | None = None,
    surrogate: StepSpikes | None = None,
    surrogate_scale: Sequence[torch.Tensor] | None = None,
    spike_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form SN(u) = sum_t d_t s_t and the spike count per element (sum of spike magnitudes);
    ``spike_grad``: the count keeps the surrogate's gradient (for a spike penalty in the objective)."""
    out = torch.zeros_like(u)
    events = torch.zeros_like(u)
    for t, s in enumerate(spike_steps(u, theta, h, v0, levels=levels, max_spikes=max_spikes, surrogate=surrogate,
                                      surrogate_scale=surrogate_scale)):
        out = out + d[t] * s
        events = events + (s if spike_grad else s.detach())
    return out, events


def encode_frames(
    u: torch.Tensor,
    theta: Sequence[torch.Tensor],
    h: Sequence[torch.Tensor],
    v0: torch.Tensor | float,
    *,
    levels: int = 2,
    max_spikes: int | None = None,
) -> torch.Tensor:
    """Spike magnitudes stacked as frames ``[T, *u.shape]``."""
    return torch.stack(list(spike_steps(u, theta, h, v0, levels=levels, max_spikes=max_spikes)))


def decode_frames(frames: torch.Tensor, d: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_t d_t frames[t], accumulated in the same order as :func:`phase_code`."""
    out = torch.zeros_like(frames[0])
    for t in range(frames.shape[0]):
        out = out + d[t] * frames[t]
    return out
