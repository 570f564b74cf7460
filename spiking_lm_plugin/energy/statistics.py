"""Spike statistics of the ops, read off the frames the executions produced (docs/DESIGN.md, "Energy").

Each function turns tensors into one op event: counting rules live in the cost model, never here.
Frames are signed spike magnitudes [T, ...]; a masked attention pair never counts.
"""

from __future__ import annotations

import torch

from .events import Count, LinearOp, ProductOp, ScoresOp, SoftmaxOp, ValuesOp


def nnz(t: torch.Tensor) -> torch.Tensor:
    """Spike count of signed frames: sum of magnitudes (= nonzeros for binary spikes)."""
    return t.abs().sum(dtype=torch.float64)


def linear_op(kind: str, linear: torch.nn.Linear, tokens: int, timesteps: int | None,
              spikes: Count = 0.0) -> LinearOp:
    return LinearOp(kind, linear.in_features, linear.out_features, linear.bias is not None, timesteps,
                    tokens, 0.0 if timesteps is None else spikes, getattr(linear, "weight_bits", None))


def one_clock(*frames: torch.Tensor | None) -> list[torch.Tensor | None]:
    """Per-step tensors [T_i, ...] of operands with their own T padded with empty steps to the longest T (a
    site that has sent all its spikes stays silent while the other one goes on): what the time-stepped
    products and the meter's counts both run on; None stays None."""
    steps = max((f.shape[0] for f in frames if f is not None), default=0)
    return [f if f is None or f.shape[0] == steps else
            torch.cat([f, f.new_zeros((steps - f.shape[0],) + f.shape[1:])]) for f in frames]


def product_op(kind: str, numel: int, timesteps: int | None, a_frames=None, b_frames=None, a_events=None,
               b_events=None, both=None) -> ProductOp:
    """A * B; an operand is spiking when its frames or its spike count are given. ``both``: the
    coincidences when the caller already has them (then no frames are needed)."""
    a_frames, b_frames = one_clock(a_frames, b_frames)
    a_spiking = a_frames is not None or a_events is not None
    b_spiking = b_frames is not None or b_events is not None
    operands = int(a_spiking) + int(b_spiking) if timesteps is not None else 0
    if operands == 0:
        return ProductOp(kind, 0, None, numel)
    spikes_a = (nnz(a_frames) if a_events is None else a_events) if a_spiking else 0.0
    spikes_b = (nnz(b_frames) if b_events is None else b_events) if b_spiking else 0.0
    if operands == 2 and both is None:
        both = torch.mul(a_frames, b_frames).abs_().sum(dtype=torch.float64)
    return ProductOp(kind, operands, timesteps, numel, spikes_a, spikes_b, both if operands == 2 else 0.0)


def _allowed_counts(allowed: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pairs over all heads, keys per query [B, 1|H, L], queries per key [B, 1|H, S]) of a bool mask."""
    a = allowed.to(torch.float32)
    per_head = heads if allowed.shape[1] == 1 else 1
    return a.sum(dtype=torch.float64) * per_head, a.sum(-1), a.sum(-2)


#: the query rows [B, L] and key columns [B, S] of an attention that count (docs/DESIGN.md, "Energy"):
#: padding is neither, a rolling window's re-processed context is read as keys only; None: all count
CountedPositions = tuple[torch.Tensor, torch.Tensor]


def restrict(allowed: torch.Tensor, counted: CountedPositions | None) -> torch.Tensor:
    """The allowed (query, key) pairs whose query and key both count."""
    if counted is None:
        return allowed
    queries, keys = counted
    return allowed & queries[:, None, :, None] & keys[:, None, None, :]


def _rectangle(allowed: torch.Tensor, heads: int, counted: CountedPositions | None) -> tuple[Count, Count, Count]:
    """(queries per sequence, keys per sequence, entries of the full queries x keys rectangles over the
    batch and heads) of a [B, 1|H, L, S] mask; per-sequence counts are [B] tensors when ``counted`` is given."""
    if counted is None:
        queries, keys = allowed.shape[-2], allowed.shape[-1]
        return queries, keys, allowed.shape[0] * heads * queries * keys
    queries, keys = (c.sum(-1, dtype=torch.float64) for c in counted)
    return queries, keys, heads * (queries * keys).sum()


def _counted_frames(frames: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """Frames [T, B, H, N, ...] with the positions [B, N] that do not count zeroed."""
    if positions is None:
        return frames
    return frames * positions[None, :, None, :, None].to(frames.dtype)


def _per_sequence(frames: torch.Tensor) -> torch.Tensor:
    """Spikes per sequence [B] of frames [T, B, ...] (reduced in place of a transposed copy)."""
    return frames.sum(dim=tuple(d for d in range(frames.ndim) if d != 1), dtype=torch.float64)


def _grouped(frames: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """[T, B, H, ...] -> [T, B, Hkv, G, ...]: query heads grouped by the key/value head they read."""
    t, b, h = frames.shape[:3]
    return frames.reshape(t, b, kv_heads, h // kv_heads, *frames.shape[3:])


def intervals(allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(first, end) key index per query row [B, 1, L] when every row of a head-shared mask allows one
    contiguous run of keys (causal, sliding window, left padding, prefix); else None."""
    if allowed.shape[1] != 1:
        return None
    s = allowed.shape[-1]
    idx = torch.arange(s, device=allowed.device)
    count = allowed.sum(-1)
    first = torch.where(allowed, idx, s).amin(-1)
    end = torch.where(allowed, idx + 1, 0).amax(-1)
    contiguous = (count == 0) | (end - first == count)
    if not bool(contiguous.all()):
        return None
    first = torch.where(count == 0, 0, first)
    return first, torch.where(count == 0, 0, end)


def interval_sums(x: torch.Tensor, first: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """sum of x [..., B, Hkv, S, D] over the keys [first, end) of each query row (bounds [B, 1, L], from
    :func:`intervals`) -> [..., B, Hkv, L, D], by prefix sums over the keys."""
    csum = torch.cat([torch.zeros_like(x[..., :1, :]), x.cumsum(-2)], dim=-2)
    shape = (*x.shape[:-2], first.shape[-1], x.shape[-1])
    take = lambda i: torch.gather(csum, -2, i[..., None].expand(shape))  # noqa: E731
    return take(end) - take(first)


def _pair_products(qa: torch.Tensor, ka: torch.Tensor, allowed: torch.Tensor, heads: int) -> torch.Tensor:
    """sum over t and allowed (query, key) pairs of |Q_t[l]| . |K_t[s]|. With interval masks: prefix sums of
    |K_t| over keys (O(T L D) per head); else the explicit [T, L, S] products."""
    kv_heads = ka.shape[2]
    groups = heads // kv_heads
    bounds = intervals(allowed)
    if bounds is not None:
        first, end = bounds                                            # [B, 1, L]
        q_group = _grouped(qa, kv_heads).sum(3)                        # [T, B, Hkv, L, D]
        return (q_group * interval_sums(ka, first, end)).sum(dtype=torch.float64)
    if allowed.shape[1] == 1:
        both = torch.matmul(_grouped(qa, kv_heads).sum(3), ka.transpose(-1, -2))    # [T, B, Hkv, L, S]
    else:   # a per-head mask: the ungrouped product
        both = torch.matmul(qa, ka.repeat_interleave(groups, dim=2).transpose(-1, -2))
    return (both * allowed.to(torch.float32)).sum(dtype=torch.float64)


def _queries_per_key(queries_per_key: torch.Tensor, allowed: torch.Tensor, kv_heads: int, heads: int):
    """Queries reading each key of each key/value head, [B, 1|Hkv, S] (times the group when head-shared)."""
    if allowed.shape[1] == 1:
        return queries_per_key * (heads // kv_heads)
    return _grouped(queries_per_key[None], kv_heads)[0].sum(2)


def scores_op(kind: str, q_frames, k_frames, allowed: torch.Tensor, heads: int, head_dim: int,
              timesteps: int | None, counted: CountedPositions | None = None) -> ScoresOp:
    """Q K^T. Frames: Q [T, B, H, L, D], K [T, B, Hkv, S, D] (not repeated: a key spike fans out to every
    query head of its group); ``allowed`` [B, 1|H, L, S] bool; ``counted``: see :data:`CountedPositions`."""
    q_frames, k_frames = one_clock(q_frames, k_frames)
    if q_frames is not None:   # a batch-shared mask counts once per sequence
        allowed = allowed.expand(q_frames.shape[1], *allowed.shape[1:])
    allowed = restrict(allowed, counted)
    pairs, keys_per_query, queries_per_key = _allowed_counts(allowed, heads)
    queries, keys, full = _rectangle(allowed, heads, counted)
    if timesteps is None:
        return ScoresOp(kind, head_dim, None, pairs, full_pairs=full)
    rows, columns = (None, None) if counted is None else counted
    qa = _counted_frames(q_frames.abs().to(torch.float32), rows)
    ka = _counted_frames(k_frames.abs().to(torch.float32), columns)
    kv_heads = ka.shape[2]
    groups = heads // kv_heads
    term_q = (qa.sum(-1) * keys_per_query).sum(dtype=torch.float64)
    term_k = (ka.sum(-1) * _queries_per_key(queries_per_key, allowed, kv_heads, heads)).sum(dtype=torch.float64)
    q_spikes, k_spikes = _per_sequence(qa), _per_sequence(ka)
    # every query row meets every key row: (sum over queries) . (sum over keys), per key/value head
    both_full = (_grouped(qa, kv_heads).sum((3, 4)) * ka.sum(-2)).sum(dtype=torch.float64)
    return ScoresOp(kind, head_dim, timesteps, pairs, term_q, term_k, _pair_products(qa, ka, allowed, heads),
                    q_spikes.sum(), k_spikes.sum(), full, (q_spikes * keys).sum(),
                    (k_spikes * queries).sum() * groups, both_full)


def values_op(kind: str, p_frames, v_frames, allowed: torch.Tensor, heads: int, head_dim: int,
              timesteps: int | None, p_columns: torch.Tensor | None = None,
              counted: CountedPositions | None = None) -> ValuesOp:
    """P V. Frames: P [T, B, H, L, S] (zero where masked) or, equivalently for the count, ``p_columns``
    [T, B, H, S] = P's spikes summed over the counted queries; V [T, B, Hkv, S, D] (not repeated);
    ``counted``: see :data:`CountedPositions`."""
    p_frames, p_columns, v_frames = one_clock(p_frames, p_columns, v_frames)
    if v_frames is not None:   # a batch-shared mask counts once per sequence
        allowed = allowed.expand(v_frames.shape[1], *allowed.shape[1:])
    allowed = restrict(allowed, counted)
    pairs, _, queries_per_key = _allowed_counts(allowed, heads)
    queries, _, full = _rectangle(allowed, heads, counted)
    if timesteps is None:
        return ValuesOp(kind, head_dim, None, pairs, full_pairs=full)
    rows, columns = (None, None) if counted is None else counted
    va = _counted_frames(v_frames.abs().to(torch.float32), columns)
    kv_heads = va.shape[2]
    if p_columns is None:   # softmax outputs are >= 0: their frames are the magnitudes
        p_columns = _counted_frames(p_frames.to(torch.float32), rows).sum(-2)
    outputs = heads * head_dim * (p_columns.shape[1] * queries if counted is None else queries.sum())
    v_rows = va.sum(-1)                                            # [T, B, Hkv, S]
    term_v = (v_rows * _queries_per_key(queries_per_key, allowed, kv_heads, heads)).sum(dtype=torch.float64)
    p_per_key = _grouped(p_columns.to(torch.float32), kv_heads).sum(3)      # [T, B, Hkv, S]
    v_spikes = _per_sequence(va)
    return ValuesOp(kind, head_dim, timesteps, pairs, float(outputs) if counted is None else outputs,
                    p_per_key.sum(dtype=torch.float64), term_v, (p_per_key * v_rows).sum(dtype=torch.float64),
                    v_spikes.sum(), full, (v_spikes * queries).sum() * (heads // kv_heads))


def allowed_entries(allowed: torch.Tensor, heads: int) -> torch.Tensor:
    """How many entries of the attention map are real (what the softmax site's neurons code)."""
    return _allowed_counts(allowed, heads)[0]


def softmax_op(allowed: torch.Tensor, heads: int, entries: Count | None = None,
               counted: CountedPositions | None = None) -> SoftmaxOp:
    """The softmax over the allowed entries of a [B, 1|H, L, S] mask (``entries``: their count, when the
    caller has it) and the rectangle they sit in; ``counted``: see :data:`CountedPositions`."""
    pairs = allowed_entries(restrict(allowed, counted), heads) if entries is None else entries
    return SoftmaxOp("softmax", pairs, _rectangle(allowed, heads, counted)[2])
