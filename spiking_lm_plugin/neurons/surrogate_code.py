"""The phase code of a neuron bank with the sigmoid surrogate, as one autograd function (paper eq. 1-3,
7-8 and the surrogate of Alg. 1).

Autograd through :func:`~.dynamics.phase_code` records ~8 elementwise ops per step and replays ~20 in the
backward, each a pass over the [sites, N] minibatch. Here the backward is written out, so each pass
recomputes the spikes in registers and the whole step runs as one kernel under ``torch.compile``:

    z_t = (v_t - theta_t) / c_t,  s_t = H(z_t),  v_{t+1} = v_t - h_t s_t,  SN = sum_t d_t s_t
    lambda_{T+1} = 0,  g_t = dL/dSN d_t + dL/dspikes - lambda_{t+1} h_t       (dL/ds_t)
    dL/dd_t = sum_n dL/dSN s_t,  dL/dh_t = -sum_n lambda_{t+1} s_t
    gz_t = g_t beta sig(beta z_t) (1 - sig(beta z_t)),  dL/dtheta_t = -sum_n gz_t / c_t,
    lambda_t = lambda_{t+1} + gz_t / c_t

``c_t`` is the surrogate's width unit (the bank's initial weights d0_t). The forward gives the same spikes
and SN as the stepwise dynamics (same ops in the same order); gradients agree to float rounding (tested).
Binary spikes without a spike budget only, and only where ``torch.compile`` works (eagerly the stepwise
autograd is faster); other neurons keep the stepwise autograd.
"""

from __future__ import annotations

import torch

from .kernels import call_compiled


def _forward(u: torch.Tensor, theta: torch.Tensor, h: torch.Tensor, d: torch.Tensor, v0: torch.Tensor,
             scale: torch.Tensor):
    """(SN(u), spikes per value) [S, N] for parameters [S, T] and v0 [S, 1]."""
    v = u + v0
    out = torch.zeros_like(u)
    events = torch.zeros_like(u)
    for t in range(theta.shape[1]):
        s = ((v - theta[:, t:t + 1]) / scale[:, t:t + 1] >= 0).to(u.dtype)
        out = out + d[:, t:t + 1] * s
        events = events + s
        v = v - h[:, t:t + 1] * s
    return out, events


def _backward(u: torch.Tensor, theta: torch.Tensor, h: torch.Tensor, d: torch.Tensor, v0: torch.Tensor,
              scale: torch.Tensor, grad_out: torch.Tensor, grad_events: torch.Tensor, beta: float):
    """(dL/dtheta, dL/dh, dL/dd) [S, T] from the output gradients [S, N]; the spikes are recomputed."""
    steps = theta.shape[1]
    v = u + v0
    z, s = [], []
    for t in range(steps):
        z.append((v - theta[:, t:t + 1]) / scale[:, t:t + 1])
        s.append((z[t] >= 0).to(u.dtype))
        v = v - h[:, t:t + 1] * s[t]
    lam = torch.zeros_like(u)
    g_theta, g_h, g_d = [None] * steps, [None] * steps, [None] * steps
    for t in reversed(range(steps)):
        g_d[t] = (grad_out * s[t]).sum(1)
        g_h[t] = -(lam * s[t]).sum(1)
        g_s = grad_out * d[:, t:t + 1] + grad_events - lam * h[:, t:t + 1]
        sig = torch.sigmoid(beta * z[t])
        g_z = g_s * (beta * sig * (1 - sig)) / scale[:, t:t + 1]
        g_theta[t] = -g_z.sum(1)
        lam = lam + g_z
    return torch.stack(g_theta, 1), torch.stack(g_h, 1), torch.stack(g_d, 1)


class _SurrogatePhaseCode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, theta, h, d, v0, scale, beta: float):  # type: ignore[override]
        # detached, so the kernel is the one exact_phase_code compiled (dynamo guards on requires_grad)
        u, theta, h, d, v0, scale = (t.detach() for t in (u, theta, h, d, v0, scale))
        out, events = call_compiled("fit_forward", _forward, u, theta, h, d, v0, scale)
        ctx.save_for_backward(u, theta, h, d, v0, scale)
        ctx.beta = beta
        return out, events

    @staticmethod
    def backward(ctx, grad_out, grad_events):  # type: ignore[override]
        u, theta, h, d, v0, scale = ctx.saved_tensors
        grad_out = torch.zeros_like(u) if grad_out is None else grad_out.contiguous()
        grad_events = torch.zeros_like(u) if grad_events is None else grad_events.contiguous()
        g_theta, g_h, g_d = call_compiled("fit_backward", _backward, u, theta, h, d, v0, scale,
                                          grad_out, grad_events, ctx.beta)
        return None, g_theta, g_h, g_d, None, None, None


def surrogate_phase_code(u: torch.Tensor, theta: torch.Tensor, h: torch.Tensor, d: torch.Tensor,
                         v0: torch.Tensor, scale: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(SN(u), spikes per value) [S, N] of binary neurons with parameters [S, T] and v0 [S, 1]; gradients
    reach theta, h and d through the sigmoid surrogate of sharpness ``beta`` in units of ``scale`` [S, T].
    The spike count carries the surrogate gradient too (a spike penalty in the objective)."""
    return _SurrogatePhaseCode.apply(u.contiguous(), theta.contiguous(), h.contiguous(), d.contiguous(),
                                     v0.contiguous(), scale.contiguous(), float(beta))


@torch.no_grad()
def exact_phase_code(u: torch.Tensor, theta: torch.Tensor, h: torch.Tensor, d: torch.Tensor,
                     v0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(SN(u), spikes per value) [S, N] with the exact step and no gradient (evaluating a fit), one kernel."""
    # detached as in the surrogate's forward: a view (v0 is one) would make dynamo guard on its base and
    # compile the kernel a second time for the fit's calls
    u, theta, h, d, v0 = (t.detach().contiguous() for t in (u, theta, h, d, v0))
    return call_compiled("fit_forward", _forward, u, theta, h, d, v0, torch.ones_like(theta))
