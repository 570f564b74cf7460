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


def _code_steps(x: torch.Tensor, tau: torch.Tensor, theta: torch.Tensor, h: torch.Tensor, d: torch.Tensor,
                v0: torch.Tensor, levels: int, max_spikes: int, count: bool = False,
                weights: torch.Tensor | None = None):
    """The T steps of a site, elementwise: (sign(x) tau SN(|x|/tau), spike magnitudes summed over the steps
    when ``count``, spikes times ``weights[t]`` summed over the steps when given). The kernels below
    differ only in what they keep; under ``torch.compile`` each is one loop over memory."""
    xf, v = _membrane(x, tau, v0)
    code = torch.zeros_like(v)
    events = torch.zeros_like(v) if count else None
    weighted = torch.zeros_like(v) if weights is not None else None
    fired = None
    for t in range(theta.shape[0]):
        s, v, fired = fire(v, theta[t], h[t], fired, levels, max_spikes)
        code = code + d[t] * s
        if count:
            events = events + s      # spike magnitude: 1 per binary spike, k for an integer spike of k
        if weights is not None:
            weighted = weighted + s * weights[t]
    return (torch.sign(xf) * tau * code).to(x.dtype), events, weighted


def _site_code(x: torch.Tensor, tau: torch.Tensor, theta: torch.Tensor, h: torch.Tensor, d: torch.Tensor,
               v0: torch.Tensor, levels: int, max_spikes: int, rows: torch.Tensor | None = None):
    """(sign(x) tau SN(|x|/tau), spike count) for a site; ``max_spikes <= 0`` means no budget. An integer
    spike of magnitude k counts k (k accumulations downstream), a binary spike 1; ``rows``: which rows'
    spikes are counted (padding is computed, never counted)."""
    value, events, _ = _code_steps(x, tau, theta, h, d, v0, levels, max_spikes, count=True)
    return value, _counted(events, rows)


def _site_value(x: torch.Tensor, tau: torch.Tensor, theta: torch.Tensor, h: torch.Tensor, d: torch.Tensor,
                v0: torch.Tensor, levels: int, max_spikes: int):
    """sign(x) tau SN(|x|/tau) alone (nothing metered): :func:`_site_code`'s value without the count."""
    return _code_steps(x, tau, theta, h, d, v0, levels, max_spikes)[0]


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


def _site_code_weighted(x: torch.Tensor, tau: torch.Tensor, theta: torch.Tensor, h: torch.Tensor, d: torch.Tensor,
                        v0: torch.Tensor, levels: int, max_spikes: int, rows: torch.Tensor | None,
                        weights: torch.Tensor):
    """:func:`_site_code` of a map ``x`` [M, L, S] plus sum_t s_t[m, l, j] weights[t, m, 0, j] over the counted
    rows: with V's spikes per key as the weights, the P V coincidences of the softmax map from the same run
    of the dynamics, without its T frames or column maps."""
    value, events, weighted = _code_steps(x, tau, theta, h, d, v0, levels, max_spikes, count=True, weights=weights)
    return value, _counted(events, rows, torch.float64), _counted(weighted, rows, torch.float64)


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


#: Inductor's realization thresholds raised so a kernel's T unrolled steps stay one loop over memory: with
#: the defaults the long chain of a step loop is cut into several loops with full-size buffers in between
#: (the metered site kernel about 1.3x faster on 2 CPU cores, same outputs). Only keys this torch knows are
#: passed, so a torch that renames them compiles with its defaults instead of failing.
FUSION_OPTIONS = {"realize_opcount_threshold": 100_000, "realize_acc_reads_threshold": 100_000,
                  "realize_reads_threshold": 100_000}


def _fusion_options() -> dict:
    try:
        from torch._inductor import config as inductor_config
    except Exception:
        return {}
    return {k: v for k, v in FUSION_OPTIONS.items() if hasattr(inductor_config, k)}


def _get(name: str, fn):
    global _compile_failed
    if not compile_enabled():
        return fn
    if name not in _compiled:
        try:
            _compiled[name] = torch.compile(fn, dynamic=True, options=_fusion_options() or None)
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


def site_value(x, tau, theta, h, d, v0, levels: int = 2, max_spikes: int | None = None) -> torch.Tensor:
    """SN(x) alone, the unmetered fused execution's kernel (no spike count to reduce)."""
    value = call_compiled("value", _site_value, _as_rows(x), _channel_tau(tau, x), theta, h, d, v0, levels,
                          max_spikes or 0)
    return value.view(x.shape)


def site_frames(x, tau, theta, h, d, v0, levels: int = 2, max_spikes: int | None = None, rows=None):
    value, frames, events = call_compiled("frames", _site_frames, _as_rows(x), _channel_tau(tau, x), theta, h, d, v0, levels,
                                  max_spikes or 0, _row_weights(rows, x))
    return value.view(x.shape), frames.view(-1, *x.shape), events


def site_code_weighted(x, tau, theta, h, d, v0, levels: int = 2, max_spikes: int | None = None, rows=None,
                       weights=None):
    """(SN(x), spike count, sum of spikes x ``weights``) of a one-channel map ``x`` [..., L, S] over the query
    rows ``rows`` (bool, broadcastable to ``x.shape[:-1]``; None: all); ``weights`` [T, ..., S]: one weight per
    step and key column (the P V coincidences when they are V's spikes per key)."""
    if tau.numel() != 1:
        raise ValueError("weighted spike sums are for one-channel (per-tensor tau) sites")
    maps = x.contiguous().view(-1, x.shape[-2], x.shape[-1])
    steps = int(theta.shape[0])
    if weights.shape[0] != steps or weights[0].numel() != maps.shape[0] * maps.shape[2]:
        raise ValueError(f"weights {tuple(weights.shape)} do not match {steps} steps of a map {tuple(x.shape)}")
    counted = None if rows is None else _row_weights(rows, x).view(maps.shape[0], maps.shape[1], 1)
    per_key = weights.to(torch.float64 if x.dtype == torch.float64 else torch.float32).reshape(
        steps, maps.shape[0], 1, maps.shape[2])
    value, events, weighted = call_compiled("code_weighted", _site_code_weighted, maps, tau.reshape(1), theta, h, d,
                                            v0, levels, max_spikes or 0, counted, per_key)
    return value.view(x.shape), events, weighted


def coincidences(xa, site_a, xb, site_b, rows=None) -> torch.Tensor:
    """Spike coincidences of two sites (``SpikeSite``-like: tau, theta, h, v0, levels, spike_cap) on
    same-shape inputs, over the counted ``rows`` (bool, broadcastable to ``xa.shape[:-1]``; None: all)."""
    if site_a.theta.numel() != site_b.theta.numel():
        raise ValueError("coincidences need two sites with the same number of steps")
    args = [_as_rows(xa), _channel_tau(site_a.tau, xa), site_a.theta, site_a.h, site_a.v0,
            _as_rows(xb), _channel_tau(site_b.tau, xb), site_b.theta, site_b.h, site_b.v0,
            site_a.levels, site_a.spike_cap or 0, _row_weights(rows, xa)]
    return call_compiled("coincidences", _coincidences, *args)
