"""Spiking self-attention through transformers' ``AttentionInterface`` (docs/DESIGN.md, "Architectures").

The model's own attention forward runs unchanged: projections, q/k norms (Qwen3, Gemma-3 per head, OLMo-2
over the projection), RoPE (partial where the family has it), the KV cache and fused ``qkv_proj`` (Phi-3)
are transformers' code. Spiking enters at three places:
- the attention input (site ``attn_in``) fires once and feeds q/k/v (``SpikeFedLinear``);
- the registered attention function spikes q and k (after norms and RoPE), v and the softmax map, and
  runs Q K^T, softmax and P V in the execution the runtime selects;
- the o_proj input (site ``o_in``) is spiked in front of o_proj.
Gemma-2's logit soft-capping acts on the integrated scores inside the softmax, so both executions stay
exact. The KV cache holds the analog k and v; they are spiked on read, so both executions and
``generate`` see the same spikes. Supporting another family means naming its sites, not copying its forward.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from ..energy import (NonlinearOp, TokensSeen, query_head_weights, scores_op, softmax_op, value_columns, value_rows,
                      values_from_columns, values_from_sums, values_op)
from ..energy.statistics import CountedPositions, PairCounts, intervals
from ..hf_compat import CompatibilityError, VERSION, check_attention_kwargs, check_attention_mask
from ..rope_pairs import rotary_dim
from ..runtime import SpikingRuntime
from ..sites import site_type
from .attention_mass import lost_mass_term, mean_allowed_values, mean_over_intervals
from .block import SpikingBlock
from .blocked_attention import blocked_attention, key_widths, query_blocks, record_whole
from .linear import HeldSpikes, SpikeFedLinear
from .site import SpikeSite, Spikes, clock_steps
from .spike_ops import nonlinearity_of_accumulated, product, product_accumulated

#: the projections reading the attention input, per family (Phi-3 fuses them)
INPUT_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "qkv_proj")


def grouped_matmul(a: torch.Tensor, b: torch.Tensor, groups: int) -> torch.Tensor:
    """a [..., H, L, X] @ b [..., Hkv, X, Y] with query head h reading key/value head h // groups (GQA),
    without repeating b: the heads of a group are stacked along L."""
    if groups == 1:
        return torch.matmul(a, b)
    *lead, heads, rows, inner = a.shape
    stacked = a.reshape(*lead, heads // groups, groups * rows, inner)
    return torch.matmul(stacked, b).reshape(*lead, heads, rows, b.shape[-1])


def _observed(site: nn.Module) -> bool:
    """Whether hooks on the site expect to see the whole map (nn.Module keeps no public view of its hooks)."""
    return bool(site._forward_hooks or site._forward_pre_hooks)


@contextmanager
def whole_maps(model: nn.Module) -> Iterator[None]:
    """While open, attention builds every softmax map whole instead of a block of query rows at a time (a
    no-op hook on each softmax site asks for it): the path to compare the blocks against."""
    hooks = [m.register_forward_hook(lambda module, args, out: None) for m in model.modules()
             if isinstance(m, SpikeSite) and site_type(m.name) == "softmax"]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def allowed_pairs(mask: torch.Tensor | None, q_len: int, k_len: int, device) -> torch.Tensor:
    """Boolean [B|1, 1, L, S] of the (query, key) pairs attention may use."""
    if mask is None:
        q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
        return (torch.arange(k_len, device=device)[None, :] <= q_pos)[None, None]
    if mask.dtype == torch.bool:
        return mask
    return mask == 0


@dataclass(eq=False)
class ForwardMask:
    """One forward's attention mask in the forms every layer uses: the allowed pairs [B, 1, L, S], the
    additive mask (batch-shared) and, when metering, the energy's pair counts. transformers hands all layers
    one mask tensor; the memo holds it (and the counted positions), so an id in the key cannot be reused by
    another tensor while the memo lives, its version counter catches an in-place update, and the last layer
    drops the memo (a padded batch's mask is [B, 1, L, S]: it must not outlive its forward)."""

    key: tuple | None
    held: tuple
    allowed: torch.Tensor
    additive: torch.Tensor
    counts: PairCounts | None
    _widths: list[int] | None = None
    _bounds: Any = None

    def key_widths(self) -> list[int]:
        """Per block of query rows, the leading keys any row of it may read (blocked analog attention)."""
        if self._widths is None:
            self._widths = key_widths(self.allowed)
        return self._widths

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``intervals`` of the allowed pairs (one contiguous key run per query row, else None), found once
        per forward for every layer (the mass correction's means)."""
        if self._bounds is None:
            self._bounds = (intervals(self.allowed),)
        return self._bounds[0]

    @staticmethod
    def key_of(attention_mask, q: torch.Tensor, bsz: int, q_len: int, k_len: int, tokens,
               metering: bool) -> tuple | None:
        """None where the mask cannot be recognized again (a meta count; an inference-mode tensor has no
        version counter): then every layer builds its own."""
        if q.is_meta:
            return None
        try:
            version = None if attention_mask is None else attention_mask._version
        except RuntimeError:
            return None
        return (id(attention_mask), version, id(tokens), metering, bsz, q_len, k_len, q.dtype, q.device)

    @classmethod
    def build(cls, key: tuple | None, held: tuple, attention_mask: torch.Tensor | None, q: torch.Tensor, bsz: int,
              q_len: int, k_len: int, heads: int, metering: bool, counted: CountedPositions | None) -> "ForwardMask":
        if q.is_meta:   # a count without weights (baseline energy): one unpadded causal sample, counted on the CPU
            allowed = allowed_pairs(None, q_len, k_len, "cpu")
            additive = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device)
        else:
            allowed = allowed_pairs(attention_mask, q_len, k_len, q.device)
            if attention_mask is None or attention_mask.dtype == torch.bool:
                additive = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
            else:
                additive = attention_mask
        # energy counts are per sequence; the additive mask stays batch-shared (no [B, 1, L, S] copy)
        allowed = allowed.expand(bsz, *allowed.shape[1:])
        counts = PairCounts.of(allowed, heads, counted) if metering else None
        return cls(key, held, allowed, additive, counts)


class SpikingAttention(SpikingBlock):
    """Holds a transformers attention module (``attn``), whose forward runs with spiking projections."""

    def __init__(self, attn: nn.Module, layer: int, runtime: SpikingRuntime) -> None:
        super().__init__()
        cfg = attn.config
        self.layer_idx = self.layer = layer
        self.head_dim = attn.head_dim
        self.num_heads = cfg.num_attention_heads
        self.groups = attn.num_key_value_groups
        self.qk_norm = getattr(attn, "q_norm", None) is not None
        #: the last layer lets the forward's mask memo go, so no mask outlives its forward
        self.last_layer = layer == cfg.num_hidden_layers - 1
        self.runtime = runtime
        prefix = f"layers.{layer}."
        self.where = prefix + "self_attn"
        self.sites = nn.ModuleDict({
            "attn_in": SpikeSite(prefix + "attn_in", cfg.hidden_size, runtime),
            "q": SpikeSite(prefix + "q", self.head_dim, runtime),
            "k": SpikeSite(prefix + "k", self.head_dim, runtime),
            "v": SpikeSite(prefix + "v", self.head_dim, runtime),
            "softmax": SpikeSite(prefix + "softmax", 1, runtime),
            "o_in": SpikeSite(prefix + "o_in", self.num_heads * self.head_dim, runtime),
        })
        self.sites["q"].rotary_dim = self.sites["k"].rotary_dim = rotary_dim(cfg, self.head_dim)
        self.held_input = HeldSpikes(self.where)
        for name in INPUT_PROJECTIONS:
            if isinstance(getattr(attn, name, None), nn.Linear):
                setattr(attn, name, SpikeFedLinear(getattr(attn, name), name, runtime, self.held_input.spikes_for, layer))
        attn.o_proj = SpikeFedLinear(attn.o_proj, "o_proj", runtime, self._o_input, layer)
        self.attn = attn

    def input_linears(self) -> list[nn.Linear]:
        """The linears reading the attention input (what a residual rotation rewrites)."""
        return [getattr(self.attn, n).linear for n in INPUT_PROJECTIONS if hasattr(self.attn, n)]

    @property
    def output_linear(self) -> nn.Linear:
        return self.attn.o_proj.linear

    def _o_input(self, x: torch.Tensor):
        return self._site("o_in", x, need_frames=False, rows=self._counted_rows(x))

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        rows = self._counted_rows(hidden_states)
        if self.metering:
            if self.layer_idx == 0:
                self._emit(TokensSeen("tokens", self._tokens(hidden_states, rows)))
            self._emit(NonlinearOp("rmsnorm", self._elements(hidden_states, rows)))
        spikes = self._site("attn_in", hidden_states, need_frames=False, rows=rows)
        with self.held_input.holding(spikes):
            return self.attn(spikes.value, *args, spiking_block=self, **kwargs)

    def _attention_counted(self, bsz: int, q_len: int, k_len: int) -> CountedPositions | None:
        """(counted queries [B, L], counted keys [B, S]) of this forward: the cached keys (prefix and past
        tokens) are read and counted, the new ones where present (docs/DESIGN.md, "Energy"); None: all."""
        tokens = self.runtime.counted_tokens
        if tokens is None or not self.metering:
            return None
        if tuple(tokens.counted.shape) != (bsz, q_len):
            raise ValueError(f"the counted positions {tuple(tokens.counted.shape)} do not match an attention "
                             f"over {(bsz, q_len)} queries")
        cached = torch.ones(bsz, k_len - q_len, dtype=torch.bool, device=tokens.present.device)
        return tokens.counted, torch.cat([cached, tokens.present], dim=1)

    def _forward_mask(self, attention_mask: torch.Tensor | None, q: torch.Tensor, bsz: int, q_len: int, k_len: int,
                      counted: CountedPositions | None) -> "ForwardMask":
        """The mask as this forward's layers need it, built by the first layer and reused by the rest."""
        tokens, metering = self.runtime.counted_tokens, self.metering
        key = ForwardMask.key_of(attention_mask, q, bsz, q_len, k_len, tokens, metering)
        memo = self.runtime.attention_mask_memo
        if key is None or not isinstance(memo, ForwardMask) or memo.key != key:
            memo = ForwardMask.build(key, (attention_mask, tokens), attention_mask, q, bsz, q_len, k_len,
                                     self.num_heads, metering, counted)
            self.runtime.attention_mask_memo = None if key is None else memo
        return memo

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor | None,
               scaling: float, softcap: float | None) -> torch.Tensor:
        """softmax(Q K^T scaling + mask) V on spiked q [B, H, L, D], k, v [B, Hkv, S, D] -> [B, L, H, D]."""
        check_attention_mask(attention_mask, self.where)
        metering, timestep = self.metering, self.runtime.timestep
        need = metering or timestep
        bsz, _, q_len, _ = q.shape
        k_len = k.shape[-2]
        counted = self._attention_counted(bsz, q_len, k_len)
        query_rows, key_rows = (None, None) if counted is None else (counted[0][:, None, :], counted[1][:, None, :])
        if metering and self.qk_norm:   # the new keys only: cached ones were normed when they came
            queries = bsz * q_len if counted is None else counted[0].sum()
            self._emit(NonlinearOp("rmsnorm", queries * (self.num_heads + k.shape[1]) * self.head_dim))
        qs = self._site("q", q, need, rows=query_rows)
        ks, vs = self._site("k", k, need, rows=key_rows), self._site("v", v, need, rows=key_rows)

        mask = self._forward_mask(attention_mask, q, bsz, q_len, k_len, counted)
        allowed, additive = mask.allowed, mask.additive

        def capped(scores: torch.Tensor) -> torch.Tensor:   # Gemma-2: cap * tanh(scores / cap), analog
            return scores if not softcap else torch.tanh(scores / softcap) * softcap

        def softmax(masked: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
            return torch.softmax(masked, dim=-1, dtype=torch.promote_types(dtype, torch.float32)).to(dtype)

        groups = self.groups
        softmax_site = self.sites["softmax"]
        if not need and not (self.runtime.spiking and softmax_site.ready) and not _observed(softmax_site):
            # an analog map nobody needs whole: a block of queries at a time, the masked keys skipped
            out = blocked_attention(qs.value, ks.value, vs.value, scaling, additive, mask.key_widths(),
                                    lambda scores, part: softmax(capped(scores).add_(part), scores.dtype),
                                    lambda a, b: grouped_matmul(a, b, groups), softmax_site.map_recorder)
            if self.last_layer:
                self.runtime.attention_mask_memo = None
            return out.transpose(1, 2).contiguous()

        def normalize(scores: torch.Tensor, part: torch.Tensor, fresh: bool = False) -> torch.Tensor:
            # a fresh map takes the mask in place: one allocation fewer per block
            scores = capped(scores)
            masked = scores.add_(part) if fresh or softcap else scores + part
            return softmax(masked, scores.dtype)
        qk = lambda a, b: grouped_matmul(a, b.transpose(-1, -2), groups)  # noqa: E731
        pv = lambda a, b: grouped_matmul(a, b, groups)  # noqa: E731
        # masked entries of the map are not neurons: the softmax site's slots are the allowed entries
        pairs = mask.counts
        if metering:
            self._emit(scores_op("qk", qs.frames, ks.frames, pairs, self.num_heads, self.head_dim,
                                 None if qs.analog else clock_steps(qs, ks)))
            self._emit(softmax_op(pairs, self.num_heads))
        recorder = softmax_site.map_recorder
        if q.is_meta or recorder is not None or _observed(softmax_site):
            blocks = [(0, q_len, k_len)]    # hooks and recorders see the whole map
        else:   # every op below is local to a query row: a block of rows at a time, the masked keys skipped
            blocks = query_blocks(mask.key_widths(), q_len)
        map_spiking = self.runtime.spiking and softmax_site.ready
        # metered fused: the P V count from the softmax kernel itself, its spikes weighted by V's spikes per key
        weighted = metering and not timestep and map_spiking
        v_rows = weights = None
        if weighted:
            v_rows = None if vs.analog else value_rows(vs.frames, counted)
            weights = q.new_zeros((softmax_site.timesteps, bsz, self.num_heads, k_len), dtype=torch.float32) \
                if v_rows is None else query_head_weights(v_rows, self.num_heads, softmax_site.timesteps)
        tally = _MapTally(metering and map_spiking and not weighted, (bsz, self.num_heads, k_len))
        mass = self.runtime.mass_correction and map_spiking and not q.is_meta
        bounds = mask.bounds() if mass else None
        # contiguous key runs: every query row's mean value once per layer, the blocks slice it
        row_means = None if bounds is None else mean_over_intervals(vs.value, bounds, self.num_heads)
        outputs = []
        for start, stop, width in blocks:
            q_rows, k_rows, v_keys = qs.rows(start, stop), ks.rows(0, width), vs.rows(0, width)
            part = additive[..., start:stop, :width]
            if timestep and not qs.analog:   # the scaling goes on the query steps, not on T maps
                scores = product_accumulated(q_rows, k_rows, lambda a, b: qk(a * scaling, b))
                probs = nonlinearity_of_accumulated(lambda x: normalize(x, part), scores).sum(0).to(q.dtype)
            else:
                probs = normalize(product(q_rows, k_rows, qk, timestep=False).mul_(scaling), part, fresh=True)
            if recorder is not None:
                record_whole(recorder, probs)
            counted_rows = None if query_rows is None else query_rows[..., start:stop, None]   # [B, 1, l, 1]
            if weighted:
                ps = softmax_site.code_weighted(probs, weights[..., :width], rows=counted_rows)
            else:
                ps = softmax_site(probs.unsqueeze(-1), need_frames=need, rows=counted_rows).squeeze_last()
            tally.add(ps, None if counted is None else counted[0][:, start:stop], width)
            out = product(ps, v_keys, pv, timestep)
            if mass:
                means = row_means[..., start:stop, :] if row_means is not None else \
                    mean_allowed_values(v_keys.value, allowed[..., start:stop, :width], self.num_heads, pv)
                out = out + lost_mass_term(ps.value, means)
            outputs.append(out)
        out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
        if metering:
            steps = None if not map_spiking else clock_steps(ps, vs)
            if map_spiking:
                self._report_fired("softmax", tally.events, pairs.pairs)
            if weighted:
                self._emit(values_from_sums("pv", tally.events, tally.weighted, v_rows, pairs, self.head_dim,
                                            steps, bsz))
            elif map_spiking:
                self._emit(values_from_columns("pv", tally.columns, vs.frames, pairs, self.head_dim, steps))
            else:
                self._emit(values_op("pv", None, vs.frames, pairs, self.num_heads, self.head_dim, None))
        if metering and self.runtime.mass_correction and map_spiking:
            outputs = (bsz * q_len if counted is None else counted[0].sum()) * self.num_heads * self.head_dim
            self._emit(NonlinearOp("mass_correction", outputs))
        if self.last_layer:
            self.runtime.attention_mask_memo = None
        return out.transpose(1, 2).contiguous()


class _MapTally:
    """The softmax map's spike statistics summed over the blocks of query rows: its spike count, the spikes
    weighted by V's (metered fused) and, when ``columns``, its spikes per step and key column (metered
    timestep: the P V count's input)."""

    def __init__(self, columns: bool, shape: tuple[int, int, int]) -> None:
        self.events: torch.Tensor | None = None
        self.weighted: torch.Tensor | None = None
        self.columns: torch.Tensor | None = None
        self._shape = shape if columns else None          # [B, H, S] of the whole map

    def add(self, ps: Spikes, rows: torch.Tensor | None, width: int) -> None:
        if ps.events is not None:
            self.events = ps.events if self.events is None else self.events + ps.events
        if ps.weighted is not None:
            self.weighted = ps.weighted if self.weighted is None else self.weighted + ps.weighted
        if self._shape is not None and ps.frames is not None:
            part = value_columns(ps.frames, rows)
            if self.columns is None:
                self.columns = part.new_zeros((part.shape[0],) + self._shape)
            self.columns[..., :width] += part


def spiking_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              attention_mask: torch.Tensor | None, scaling: float | None = None,
                              dropout: float = 0.0, softcap: float | None = None,
                              spiking_block: SpikingAttention | None = None, **kwargs: Any):
    """The function registered in transformers' ``AttentionInterface`` as ``spiking``."""
    if spiking_block is None:
        raise CompatibilityError(f"{type(module).__name__}: the spiking attention was called without its block "
                                 f"(transformers {VERSION} did not pass the attention keywords through, or the "
                                 "model was loaded with attn_implementation='spiking' without converting it)")
    check_attention_kwargs(kwargs, spiking_block.where)
    if scaling is None:
        scaling = spiking_block.head_dim ** -0.5
    return spiking_block.attend(query, key, value, attention_mask, scaling, softcap), None
