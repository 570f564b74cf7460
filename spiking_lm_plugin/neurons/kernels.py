"""Fused site kernels: SN(x) = sign(x) tau sum_t d_t s_t in one pass over memory (eq. 1-3, 7-8).

The eager form runs ~6 elementwise ops per step (T passes over an activation); ``torch.compile`` turns the
unrolled loop into one kernel, much faster on large maps (docs/BENCHMARKS.md). Compilation is on by default where a C compiler/GPU backend works and can be
switched off with ``SPIKING_LM_COMPILE=0`` (the eager path gives the same spikes).
"""

from __future__ import annotations

import os
import warnings

import torch

from .dynamics import fire


def _membrane(x: torch.Tensor, tau: torch.Tensor, v0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x in float32/64, the initial membrane |x| / tau + v0) shared by every kernel (eq. 1)."""
    xf = x if x.dtype == torch.float64 else x.float()
    return xf, xf.abs() / tau + v0


def _counted(events: torch.Tensor, rows: torch.Tensor | None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The spike count over the rows that count for energy (``rows`` [N, 1] of 0/1; None: all)."""
    return events.sum(dtype=dtype) if rows is None else (events * rows).sum(dtype=dtype)


def _site_code(x: torch.Tensor, tau: torch.Tensor, theta: torch.Tensor, h: torch.Tensor, d: torch.Tensor,
               v0: torch.Tensor, levels: int, max_spikes: int, rows: torch.Tensor | None = None):
    """(sign(x) tau SN(|x|/tau), spike count) for a site; ``max_spikes <= 0`` means no budget. An integer
    spike of magnitude k counts k (k accumulations downstream), a binary spike 1; ``rows``: which rows'
    spikes are counted (padding is computed, never counted)."""
    xf, v = _membrane(x, tau, v0)
    code = torch.zeros_like(v)
    events = torch.zeros_like(v)
    fired = None
    for t in range(theta.shape[0]):
        s, v, fired = fire(v, theta[t], h[t], fired, levels, max_spikes)
        code = code + d[t] * s
        events = events + s          # spike magnitude: 1 per binary spike, k for an integer spike of k
    return (torch.sign(xf) * tau * code).to(x.dtype), _counted(events, rows)


def _site_frames(x: torch.Tensor, tau: torch.Tensor, theta: torch.Tensor, h: torch.Tensor, d: torch.Tensor,
                 v0: torch.Tensor, levels: int, max_spikes: int, rows: torch.Tensor | None = None):
    """(value, signed spike frames [T, ...], number of spikes); value accumulates like :func:`_site_code`."""
    xf, v = _membrane(x, tau, v0)
    sign = torch.sign(xf)
    code = torch.zeros_like(v)
    fired = None
    frames = []
    for t in range(theta.shape[0]):
        s, v, fired = fire(v, theta[t], h[t], fired, levels, max_spikes)
        code = code + d[t] * s
        frames.append(s * sign)
    stacked = torch.stack(frames)
    return (sign * tau * code).to(x.dtype), stacked.to(x.dtype), _counted(stacked.abs(), rows)


def _site_columns(x: torch.Tensor, tau: torch.Tensor, theta: torch.Tensor, h: torch.Tensor, d: torch.Tensor,
                  v0: torch.Tensor, levels: int, max_spikes: int, rows: torch.Tensor | None = None):
    """For a map ``x`` [M, L, S] (the softmax output): the spikes per key column and step [T, M, S], what
    the P V energy count needs, without the T full frames (``rows`` [M, L, 1]: the query rows counted).
    The value comes from :func:`_site_code`, so metering never changes the model's output."""
    _, v = _membrane(x, tau, v0)
    fired = None
    columns = []
    for t in range(theta.shape[0]):
        s, v, fired = fire(v, theta[t], h[t], fired, levels, max_spikes)
        columns.append((s if rows is None else s * rows).sum(1))
    return torch.stack(columns)


def _site_code_pattern(x: torch.Tensor, tau: torch.Tensor, theta: torch.Tensor, h: torch.Tensor, d: torch.Tensor,
                       v0: torch.Tensor, levels: int, max_spikes: int, rows: torch.Tensor | None = None):
    """:func:`_site_code` of a map ``x`` [M, L, S] plus each value's binary spikes as the bits of one integer
    (bit t: a spike at step t; 0 in rows not counted): the value and the column counts of the softmax site
    from one run of the dynamics. The value's ops are those of :func:`_site_code`, so it is the same."""
    xf, v = _membrane(x, tau, v0)
    code = torch.zeros_like(v)
    events = torch.zeros_like(v)
    pattern = torch.zeros_like(v)
    fired = None
    for t in range(theta.shape[0]):
        s, v, fired = fire(v, theta[t], h[t], fired, levels, max_spikes)
        code = code + d[t] * s
        events = events + s
        pattern = pattern + s * float(2 ** t)
    if rows is not None:
        pattern = pattern * rows
    bits = torch.uint8 if theta.shape[0] <= 8 else torch.int32
    return (torch.sign(xf) * tau * code).to(x.dtype), _counted(events, rows, torch.float64), pattern.to(bits)


def _pattern_columns(pattern: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Spikes per step and column [T, M, S] of spike bit patterns [M, L, S] (sums over L)."""
    wide = pattern.to(torch.int32)
    return torch.stack([torch.bitwise_and(torch.bitwise_right_shift(wide, t), 1).sum(1) for t in range(timesteps)])


def _coincidences(xa: torch.Tensor, tau_a: torch.Tensor, theta_a: torch.Tensor, h_a: torch.Tensor, v0_a: torch.Tensor,
                  xb: torch.Tensor, tau_b: torch.Tensor, theta_b: torch.Tensor, h_b: torch.Tensor, v0_b: torch.Tensor,
                  levels: int, max_spikes: int, rows: torch.Tensor | None = None):
    """sum_t |s_a(t)| |s_b(t)| of two same-shape sites (the nnz(A_t and B_t) term of an elementwise spike
    product) over the counted ``rows``, without their T frames."""
    (_, va), (_, vb) = _membrane(xa, tau_a, v0_a), _membrane(xb, tau_b, v0_b)
    fired_a = fired_b = None
    both = torch.zeros_like(va)
    for t in range(theta_a.shape[0]):
        sa, va, fired_a = fire(va, theta_a[t], h_a[t], fired_a, levels, max_spikes)
        sb, vb, fired_b = fire(vb, theta_b[t], h_b[t], fired_b, levels, max_spikes)
        both = both + sa * sb
    return _counted(both, rows, torch.float64)


_compiled: dict[str, object] = {}
_compile_failed = False
#: recompilations allowed per kernel (the dtypes, spike budgets and levels one process meets); applied only
#: around this module's own calls, so the process-wide dynamo settings stay the user's
RECOMPILE_LIMIT = 32


def _recompile_limit():
    config = torch._dynamo.config
    key = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    return config.patch(**{key: max(getattr(config, key), RECOMPILE_LIMIT)})


def compile_enabled() -> bool:
    return os.environ.get("SPIKING_LM_COMPILE", "1") not in ("0", "false", "no") and not _compile_failed


def _get(name: str, fn):
    global _compile_failed
    if not compile_enabled():
        return fn
    if name not in _compiled:
        try:
            _compiled[name] = torch.compile(fn, dynamic=True)
        except Exception as exc:  # no compiler backend: stay eager, same results
            warnings.warn(f"torch.compile unavailable ({exc}); spiking sites run eagerly")
            _compile_failed = True
            return fn
    return _compiled[name]


def call_compiled(name: str, fn, *args):
    """``fn(*args)`` through its compiled form (one per ``name``), or eagerly where compilation is off or
    fails (same results); also the energy meter's attention sums."""
    global _compile_failed
    impl = _get(name, fn)
    if impl is fn:
        return fn(*args)
    try:
        with _recompile_limit():
            return impl(*args)
    except Exception as exc:  # e.g. no C++ toolchain at first call
        warnings.warn(f"compiled spiking kernel failed ({type(exc).__name__}: {str(exc)[:200]}); running eagerly")
        _compile_failed = True
        return fn(*args)


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """A contiguous [N, C] view, so one compiled kernel serves every site shape and layout."""
    return x.contiguous().view(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)


def _channel_tau(tau: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # always [C]: a size-1 tau would make the compiler specialize a second kernel
    return tau.expand(x.shape[-1] if x.ndim else 1).contiguous()


def _row_weights(rows: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """``rows`` (bool, broadcastable to x.shape[:-1]) as the [N, 1] 0/1 weights of x's rows."""
    if rows is None:
        return None
    return rows.expand(x.shape[:-1]).reshape(-1, 1).to(torch.float64 if x.dtype == torch.float64 else torch.float32)


def site_code(x, tau, theta, h, d, v0, levels: int = 2, max_spikes: int | None = None, rows=None):
    """``rows``: bool, broadcastable to ``x.shape[:-1]``, the values whose spikes are counted (None: all)."""
    value, events = call_compiled("code", _site_code, _as_rows(x), _channel_tau(tau, x), theta, h, d, v0, levels,
                          max_spikes or 0, _row_weights(rows, x))
    return value.view(x.shape), events


def site_frames(x, tau, theta, h, d, v0, levels: int = 2, max_spikes: int | None = None, rows=None):
    value, frames, events = call_compiled("frames", _site_frames, _as_rows(x), _channel_tau(tau, x), theta, h, d, v0, levels,
                                  max_spikes or 0, _row_weights(rows, x))
    return value.view(x.shape), frames.view(-1, *x.shape), events


def site_columns(x, tau, theta, h, d, v0, levels: int = 2, max_spikes: int | None = None, rows=None):
    """``x`` [..., L, S] of a one-channel site: spike counts per step and key column [T, ..., S] over the
    query rows ``rows`` (bool, broadcastable to ``x.shape[:-1]``; None: all)."""
    if tau.numel() != 1:
        raise ValueError("column counts are for one-channel (per-tensor tau) sites")
    maps = x.contiguous().view(-1, x.shape[-2], x.shape[-1])
    weights = None if rows is None else _row_weights(rows, x).view(maps.shape[0], maps.shape[1], 1)
    columns = call_compiled("columns", _site_columns, maps, tau.reshape(1), theta, h, d, v0, levels, max_spikes or 0, weights)
    return columns.view(-1, *x.shape[:-2], x.shape[-1])


#: the most steps whose binary spikes fit the bit pattern of :func:`_site_code_pattern` (float32 integers)
PATTERN_STEPS = 24


def site_code_columns(x, tau, theta, h, d, v0, levels: int = 2, max_spikes: int | None = None, rows=None):
    """(SN(x), spike count, spikes per step and key column [T, ..., S]) of a one-channel map ``x`` [..., L, S]
    over the query rows ``rows`` (bool, broadcastable to ``x.shape[:-1]``; None: all): one run of the dynamics
    for binary spikes (their steps as bit patterns), else the value kernel and the column kernel."""
    rows_of_value = None if rows is None else rows[..., None]
    if levels != 2 or theta.shape[0] > PATTERN_STEPS:
        value, events = site_code(x[..., None], tau, theta, h, d, v0, levels, max_spikes, rows_of_value)
        return value[..., 0], events, site_columns(x, tau, theta, h, d, v0, levels, max_spikes, rows)
    if tau.numel() != 1:
        raise ValueError("column counts are for one-channel (per-tensor tau) sites")
    maps = x.contiguous().view(-1, x.shape[-2], x.shape[-1])
    weights = None if rows is None else _row_weights(rows, x).view(maps.shape[0], maps.shape[1], 1)
    value, events, pattern = call_compiled("code_pattern", _site_code_pattern, maps, tau.reshape(1), theta, h, d, v0,
                                           levels, max_spikes or 0, weights)
    columns = call_compiled("pattern_columns", _pattern_columns, pattern, int(theta.shape[0]))
    counts = torch.float64 if x.dtype == torch.float64 else torch.float32
    return value.view(x.shape), events, columns.to(counts).view(-1, *x.shape[:-2], x.shape[-1])


def coincidences(xa, site_a, xb, site_b, rows=None) -> torch.Tensor:
    """Spike coincidences of two sites (``SpikeSite``-like: tau, theta, h, v0, levels, spike_cap) on
    same-shape inputs, over the counted ``rows`` (bool, broadcastable to ``xa.shape[:-1]``; None: all)."""
    if site_a.theta.numel() != site_b.theta.numel():
        raise ValueError("coincidences need two sites with the same number of steps")
    args = [_as_rows(xa), _channel_tau(site_a.tau, xa), site_a.theta, site_a.h, site_a.v0,
            _as_rows(xb), _channel_tau(site_b.tau, xb), site_b.theta, site_b.h, site_b.v0,
            site_a.levels, site_a.spike_cap or 0, _row_weights(rows, xa)]
    return call_compiled("coincidences", _coincidences, *args)
