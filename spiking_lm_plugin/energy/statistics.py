"""Spike statistics of the ops, read off the frames the executions produced (docs/DESIGN.md, "Energy").

Each function turns tensors into one op event: counting rules live in the cost model, never here.
Frames are signed spike magnitudes [T, ...]; a masked attention pair never counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from ..neurons.kernels import call_compiled
from .events import Count, LinearOp, ProductOp, ScoresOp, SoftmaxOp, ValuesOp


def nnz(t: torch.Tensor) -> torch.Tensor:
    """Spike count of signed frames: sum of magnitudes (= nonzeros for binary spikes)."""
    return t.abs().sum(dtype=torch.float64)


def linear_op(kind: str, linear: torch.nn.Linear, tokens: int, timesteps: int | None,
              spikes: Count = 0.0, corrected: bool = False) -> LinearOp:
    """``corrected``: the input site is bias-corrected, so the layer adds a bias (-W offset) even where the
    model's linear has none."""
    return LinearOp(kind, linear.in_features, linear.out_features, linear.bias is not None or corrected, timesteps,
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


@dataclass(frozen=True, eq=False)
class PairCounts:
    """What the attention op counts read of one mask, restricted to the counted positions. Every layer of a
    forward sees the same mask, so the attention builds this once per forward and shares it."""

    allowed: torch.Tensor              # [B, 1|H, L, S] bool: the allowed pairs whose query and key both count
    heads: int
    counted: CountedPositions | None
    pairs: torch.Tensor                # allowed pairs over all heads
    keys_per_query: torch.Tensor       # [B, 1|H, L]
    queries_per_key: torch.Tensor      # [B, 1|H, S]
    queries: Count                     # the rectangle of :func:`_rectangle`
    keys: Count
    full: Count

    @classmethod
    def of(cls, allowed: torch.Tensor, heads: int, counted: CountedPositions | None = None,
           batch: int | None = None) -> "PairCounts":
        """From a [B|1, 1|H, L, S] mask; ``batch``: the sequences a batch-shared mask counts once each."""
        if batch is not None:
            allowed = allowed.expand(batch, *allowed.shape[1:])
        rectangle = _rectangle(allowed, heads, counted)
        allowed = restrict(allowed, counted)
        return cls(allowed, heads, counted, *_allowed_counts(allowed, heads), *rectangle)

    @cached_property
    def bounds(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:func:`intervals` of the restricted mask."""
        return intervals(self.allowed)


def _pair_counts(allowed: "torch.Tensor | PairCounts", heads: int, counted: CountedPositions | None,
                 frames: torch.Tensor | None) -> PairCounts:
    if isinstance(allowed, PairCounts):
        return allowed
    return PairCounts.of(allowed, heads, counted, None if frames is None else frames.shape[1])


def _magnitudes(frames: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """|frames| [T, B, H, N, ...] in float32 with the positions [B, N] that do not count zeroed (one copy)."""
    out = frames.abs() if frames.dtype == torch.float32 else frames.abs().to(torch.float32)
    if positions is not None:
        out.mul_(positions[None, :, None, :, None].to(out.dtype))
    return out


def _per_sequence(frames: torch.Tensor) -> torch.Tensor:
    """Spikes per sequence [B] of frames (or their row sums) [T, B, ...], reduced without a transposed copy."""
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


def _pair_products(qa: torch.Tensor, q_group: torch.Tensor, ka: torch.Tensor, mask: PairCounts) -> torch.Tensor:
    """sum over t and allowed (query, key) pairs of |Q_t[l]| . |K_t[s]| (``q_group``: |Q| summed over each
    key/value head's query heads). With interval masks: prefix sums of |K_t| over keys (O(T L D) per head);
    else the explicit [T, L, S] products."""
    kv_heads = ka.shape[2]
    if mask.bounds is not None:
        first, end = mask.bounds                                       # [B, 1, L]
        return (q_group * interval_sums(ka, first, end)).sum(dtype=torch.float64)
    allowed = mask.allowed
    if allowed.shape[1] == 1:
        both = torch.matmul(q_group, ka.transpose(-1, -2))             # [T, B, Hkv, L, S]
    else:   # a per-head mask: the ungrouped product
        both = torch.matmul(qa, ka.repeat_interleave(mask.heads // kv_heads, dim=2).transpose(-1, -2))
    return (both * allowed.to(torch.float32)).sum(dtype=torch.float64)


def _queries_per_key(queries_per_key: torch.Tensor, allowed: torch.Tensor, kv_heads: int, heads: int):
    """Queries reading each key of each key/value head, [B, 1|Hkv, S] (times the group when head-shared)."""
    if allowed.shape[1] == 1:
        return queries_per_key * (heads // kv_heads)
    return _grouped(queries_per_key[None], kv_heads)[0].sum(2)


def scores_op(kind: str, q_frames, k_frames, allowed: torch.Tensor | PairCounts, heads: int, head_dim: int,
              timesteps: int | None, counted: CountedPositions | None = None) -> ScoresOp:
    """Q K^T. Frames: Q [T, B, H, L, D], K [T, B, Hkv, S, D] (not repeated: a key spike fans out to every
    query head of its group); ``allowed`` [B, 1|H, L, S] bool (a batch-shared mask counts once per
    sequence) or its :class:`PairCounts`; ``counted``: see :data:`CountedPositions`."""
    q_frames, k_frames = one_clock(q_frames, k_frames)
    mask = _pair_counts(allowed, heads, counted, q_frames)
    if timesteps is None:
        return ScoresOp(kind, head_dim, None, mask.pairs, full_pairs=mask.full)
    rows, columns = (None, None) if mask.counted is None else mask.counted
    kv_heads = k_frames.shape[2]
    groups = heads // kv_heads
    per_key = _queries_per_key(mask.queries_per_key, mask.allowed, kv_heads, heads)
    if mask.bounds is not None:   # the common masks: one compiled pass over each operand's frames
        sums = call_compiled("score_sums", _interval_score_sums, q_frames, k_frames, rows, columns,
                     mask.keys_per_query, per_key, *mask.bounds)
    else:
        sums = _score_sums(q_frames, k_frames, rows, columns, mask.keys_per_query, per_key, mask)
    term_q, term_k, both, both_full, q_spikes, k_spikes = sums
    return ScoresOp(kind, head_dim, timesteps, mask.pairs, term_q, term_k, both, q_spikes.sum(), k_spikes.sum(),
                    mask.full, (q_spikes * mask.keys).sum(), (k_spikes * mask.queries).sum() * groups, both_full)


def _score_sums(q_frames: torch.Tensor, k_frames: torch.Tensor, rows: torch.Tensor | None,
                columns: torch.Tensor | None, keys_per_query: torch.Tensor, queries_per_key: torch.Tensor,
                mask: PairCounts | tuple[torch.Tensor, torch.Tensor]):
    """(term_q, term_k, coincidences, coincidences over the full rectangle, q and k spikes per sequence) of
    Q K^T; ``mask``: the interval bounds or the pair counts."""
    qa, ka = _magnitudes(q_frames, rows), _magnitudes(k_frames, columns)
    kv_heads = ka.shape[2]
    q_rows, k_rows = qa.sum(-1), ka.sum(-1)                          # [T, B, H, L], [T, B, Hkv, S]
    q_group = _grouped(qa, kv_heads).sum(3)                           # [T, B, Hkv, L, D]
    term_q = (q_rows * keys_per_query).sum(dtype=torch.float64)
    term_k = (k_rows * queries_per_key).sum(dtype=torch.float64)
    if isinstance(mask, PairCounts):
        both = _pair_products(qa, q_group, ka, mask)
    else:
        both = (q_group * interval_sums(ka, *mask)).sum(dtype=torch.float64)
    # every query row meets every key row: (sum over queries) . (sum over keys), per key/value head
    both_full = (q_group.sum(3) * ka.sum(-2)).sum(dtype=torch.float64)
    return term_q, term_k, both, both_full, _per_sequence(q_rows), _per_sequence(k_rows)


def _interval_score_sums(q_frames, k_frames, rows, columns, keys_per_query, queries_per_key, first, end):
    """:func:`_score_sums` of a mask whose rows allow contiguous key runs [first, end)."""
    return _score_sums(q_frames, k_frames, rows, columns, keys_per_query, queries_per_key, (first, end))


def values_op(kind: str, p_frames, v_frames, allowed: torch.Tensor | PairCounts, heads: int, head_dim: int,
              timesteps: int | None, counted: CountedPositions | None = None) -> ValuesOp:
    """P V. Frames: P [T, B, H, L, S] (zero where masked), V [T, B, Hkv, S, D] (not repeated; None when V
    is analog); ``allowed``, ``counted``: as in :func:`scores_op`."""
    mask = _pair_counts(allowed, heads, counted, v_frames if v_frames is not None else p_frames)
    if timesteps is None:
        return ValuesOp(kind, head_dim, None, mask.pairs, full_pairs=mask.full)
    columns = value_columns(p_frames, None if mask.counted is None else mask.counted[0])
    return values_from_columns(kind, columns, v_frames, mask, head_dim, timesteps)


def value_columns(p_frames: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """P's spikes per step and key column over the counted query ``rows`` [B, L] (None: all): [T, B, H, S]
    float32. Additive over blocks of query rows, so a map run a block at a time sums its blocks' columns."""
    # softmax outputs are >= 0: the frames are their magnitudes (no |.| copy of T maps)
    return (p_frames if rows is None else p_frames * rows[None, :, None, :, None]).sum(-2, dtype=torch.float32)


def values_from_columns(kind: str, p_columns: torch.Tensor, v_frames: torch.Tensor | None, mask: PairCounts,
                        head_dim: int, timesteps: int) -> ValuesOp:
    """P V from P's :func:`value_columns` and V's frames (None: analog), on one clock."""
    p_columns, v_frames = one_clock(p_columns, v_frames)
    v_rows = None if v_frames is None else value_rows(v_frames, mask.counted)
    p_spikes, both = call_compiled("value_products", _value_products, p_columns, v_rows)
    return values_from_sums(kind, p_spikes, both, v_rows, mask, head_dim, timesteps, p_columns.shape[1])


def value_rows(v_frames: torch.Tensor, counted: CountedPositions | None) -> torch.Tensor:
    """nnz(V_t[s]): each key's V spikes per step [T, B, Hkv, S] (float32), keys that do not count zeroed."""
    return call_compiled("value_rows", _value_rows, v_frames, None if counted is None else counted[1])


def _value_rows(v_frames: torch.Tensor, columns: torch.Tensor | None) -> torch.Tensor:
    return _magnitudes(v_frames, columns).sum(-1)


def query_head_weights(v_rows: torch.Tensor, heads: int, timesteps: int) -> torch.Tensor:
    """``v_rows`` as each query head reads them, on P's clock: [timesteps, B, H, S] (V's steps beyond P's
    meet no P spike; P's beyond V's meet an empty V step)."""
    weights = v_rows.repeat_interleave(heads // v_rows.shape[2], dim=2)[:timesteps]
    if weights.shape[0] < timesteps:
        weights = torch.cat([weights, weights.new_zeros((timesteps - weights.shape[0],) + weights.shape[1:])])
    return weights


def _value_products(p_columns: torch.Tensor, v_rows: torch.Tensor | None):
    """(P spikes, sum_{t,s} P_t spikes in column s x nnz(V_t[s])) from P's per-step column sums [T, B, H, S]."""
    if v_rows is None:
        return p_columns.sum(dtype=torch.float64), torch.zeros((), dtype=torch.float64, device=p_columns.device)
    p_per_key = _grouped(p_columns, v_rows.shape[2]).sum(3)                   # [T, B, Hkv, S]
    return p_per_key.sum(dtype=torch.float64), (p_per_key * v_rows).sum(dtype=torch.float64)


def values_from_sums(kind: str, p_spikes: Count, coincidences: Count, v_rows: torch.Tensor | None,
                     mask: PairCounts, head_dim: int, timesteps: int, batch: int) -> ValuesOp:
    """P V from P's spike count and its coincidences with V (``p_spikes``, ``coincidences``: over the counted
    queries; the fused softmax site sums both in its own kernel) and V's :func:`value_rows` (None: V analog,
    each P spike then adds a V row of ``head_dim`` values and V sends nothing)."""
    heads, queries = mask.heads, mask.queries
    outputs = heads * head_dim * (batch * queries if mask.counted is None else queries.sum())
    outputs = float(outputs) if mask.counted is None else outputs
    if v_rows is None:
        return ValuesOp(kind, head_dim, timesteps, mask.pairs, outputs, p_spikes, 0.0, coincidences, 0.0, mask.full, 0.0)
    kv_heads = v_rows.shape[2]
    per_key = _queries_per_key(mask.queries_per_key, mask.allowed, kv_heads, heads)
    term_v, v_spikes = call_compiled("value_terms", _value_terms, v_rows, per_key)
    return ValuesOp(kind, head_dim, timesteps, mask.pairs, outputs, p_spikes, term_v, coincidences, v_spikes.sum(),
                    mask.full, (v_spikes * queries).sum() * (heads // kv_heads))


def _value_terms(v_rows: torch.Tensor, queries_per_key: torch.Tensor):
    """(sum_t nnz(V_t[s]) x queries of s, V spikes per sequence)."""
    return (v_rows * queries_per_key).sum(dtype=torch.float64), _per_sequence(v_rows)


def allowed_entries(allowed: torch.Tensor, heads: int) -> torch.Tensor:
    """How many entries of the attention map are real (what the softmax site's neurons code)."""
    return _allowed_counts(allowed, heads)[0]


def softmax_op(allowed: torch.Tensor | PairCounts, heads: int, entries: Count | None = None,
               counted: CountedPositions | None = None) -> SoftmaxOp:
    """The softmax over the allowed entries of a [B, 1|H, L, S] mask (or its :class:`PairCounts`;
    ``entries``: their count, when the caller has it) and the rectangle they sit in; ``counted``: see
    :data:`CountedPositions`."""
    if isinstance(allowed, PairCounts):
        return SoftmaxOp("softmax", allowed.pairs if entries is None else entries, allowed.full)
    pairs = allowed_entries(restrict(allowed, counted), heads) if entries is None else entries
    return SoftmaxOp("softmax", pairs, _rectangle(allowed, heads, counted)[2])
