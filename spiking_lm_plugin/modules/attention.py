"""Spiking self-attention for the supported decoders (docs/DESIGN.md, "Architectures").

Sites: input (shared by q/k/v), q and k after their norms (Qwen3, Gemma-3 per head; OLMo-2 over the whole
projection) and RoPE, v, softmax output, o_proj input. A fused ``qkv_proj`` (Phi-3) is split into three
views of its weight. Gemma's logit soft-capping acts on the integrated scores inside the softmax, so both
executions stay exact. The KV cache holds the analog k (after RoPE) and v; they are spiked on read, so
both executions and ``generate`` see the same spikes.
"""

from __future__ import annotations

import torch
from torch import nn
from .. import energy
from ..hf_compat import check_attention_mask, repeat_kv, rotary_for, split_attention_kwargs
from ..runtime import SpikingRuntime
from .block import SpikingBlock
from .spike_ops import nonlinearity_steps, product, product_steps
from .site import SpikeSite


def allowed_pairs(mask: torch.Tensor | None, q_len: int, k_len: int, device) -> torch.Tensor:
    """Boolean [B|1, 1, L, S] of the (query, key) pairs attention may use."""
    if mask is None:
        q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
        return (torch.arange(k_len, device=device)[None, :] <= q_pos)[None, None]
    if mask.dtype == torch.bool:
        return mask
    return mask == 0


def split_linear(linear: nn.Linear, sizes: list[int]) -> list[nn.Linear]:
    """Linears whose weights (and biases) are views of consecutive output rows of ``linear``: a fused
    projection becomes separate ones without copying a weight."""
    parts, start = [], 0
    for size in sizes:
        part = nn.Linear(linear.in_features, size, bias=linear.bias is not None, device="meta")
        part.weight = nn.Parameter(linear.weight[start:start + size], requires_grad=False)
        if linear.bias is not None:
            part.bias = nn.Parameter(linear.bias[start:start + size], requires_grad=False)
        parts.append(part)
        start += size
    return parts


class SpikingAttention(SpikingBlock):
    def __init__(self, attn: nn.Module, layer: int, runtime: SpikingRuntime) -> None:
        super().__init__()
        cfg = attn.config
        self.config = cfg
        self.layer_idx = attn.layer_idx
        self.head_dim = attn.head_dim
        self.num_key_value_groups = attn.num_key_value_groups
        self.scaling = attn.scaling
        self.is_causal = True
        self.rotary = rotary_for(attn)
        self.softcap = getattr(attn, "attn_logit_softcapping", None)
        if hasattr(attn, "qkv_proj"):
            kv = cfg.num_key_value_heads * self.head_dim
            attn.q_proj, attn.k_proj, attn.v_proj = split_linear(
                attn.qkv_proj, [cfg.num_attention_heads * self.head_dim, kv, kv])
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
        self.q_norm, self.k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
        #: "head": normed per head after the reshape (Qwen3, Gemma-3); "full": over the projection (OLMo-2)
        self.qk_norm = None if self.q_norm is None else (
            "head" if self.q_norm.weight.numel() == self.head_dim else "full")
        self.runtime = runtime
        hidden, heads = cfg.hidden_size, cfg.num_attention_heads
        self.num_heads = heads
        prefix = f"layers.{layer}."
        self.sites = nn.ModuleDict({
            "attn_in": SpikeSite(prefix + "attn_in", hidden, runtime),
            "q": SpikeSite(prefix + "q", self.head_dim, runtime),
            "k": SpikeSite(prefix + "k", self.head_dim, runtime),
            "v": SpikeSite(prefix + "v", self.head_dim, runtime),
            "softmax": SpikeSite(prefix + "softmax", 1, runtime),
            "o_in": SpikeSite(prefix + "o_in", heads * self.head_dim, runtime),
        })

    def forward(self, hidden_states: torch.Tensor, position_embeddings=None, attention_mask=None, **kwargs):
        where = f"layers.{self.layer_idx}.self_attn"
        cache = split_attention_kwargs(kwargs, where)
        check_attention_mask(attention_mask, where)
        meter = self._meter()
        timestep = self.runtime.timestep
        need = meter is not None or timestep
        bsz, q_len, _ = hidden_states.shape
        tokens = bsz * q_len
        if meter is not None:
            meter.tokens += tokens if self.layer_idx == 0 else 0
            energy.count_nonlinear(meter, "rmsnorm", "rmsnorm", hidden_states.numel())
        x = self._site("attn_in", hidden_states, need_frames=False)
        shape = (bsz, q_len, -1, self.head_dim)
        q = self._linear(self.q_proj, x, "q_proj", tokens)
        k = self._linear(self.k_proj, x, "k_proj", tokens)
        v = self._linear(self.v_proj, x, "v_proj", tokens).view(shape).transpose(1, 2)
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.view(shape), k.view(shape)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        if meter is not None and self.qk_norm is not None:
            energy.count_nonlinear(meter, "rmsnorm", "rmsnorm", q.numel() + k.numel())
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        cos, sin = position_embeddings
        q, k = self.rotary(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        k_len = k.shape[-2]
        qs = self._site("q", q, need)
        ks, vs = self._site("k", k, need), self._site("v", v, need)
        repeat = lambda t: repeat_kv(t, self.num_key_value_groups)  # noqa: E731
        # values always go to every query head; frames only where the time-stepped products need them
        ks_rep, vs_rep = (ks.map(repeat), vs.map(repeat)) if timestep else (ks.map_value(repeat), vs.map_value(repeat))

        allowed = allowed_pairs(attention_mask, q_len, k_len, hidden_states.device)
        if attention_mask is None or attention_mask.dtype == torch.bool:
            additive = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
        else:
            additive = attention_mask
        # energy counts are per sequence; the additive mask above stays batch-shared (no [B, 1, L, S] copy)
        allowed = allowed.expand(bsz, *allowed.shape[1:])
        softmax = lambda s: torch.softmax(self._capped(s * self.scaling) + additive, dim=-1,  # noqa: E731
                                          dtype=torch.promote_types(s.dtype, torch.float32)).to(s.dtype)
        qk = lambda a, b: torch.matmul(a, b.transpose(-1, -2))  # noqa: E731
        if meter is not None:
            energy.count_scores(meter, "qk", qs.frames, ks.frames, allowed, self.num_heads, self.head_dim,
                                None if qs.analog else qs.d.numel())
            energy.count_nonlinear(meter, "softmax", "softmax", bsz * self.num_heads * q_len * k_len)
        if timestep and not qs.analog:
            probs = nonlinearity_steps(softmax, product_steps(qs, ks_rep, qk)).sum(0).to(q.dtype)
        else:
            probs = softmax(product(qs, ks_rep, qk, timestep=False))
        if meter is not None and not timestep:   # the P V count needs column sums only, not T full maps
            ps = self._site_columns("softmax", probs)
        else:
            ps = self._site("softmax", probs.unsqueeze(-1), need).squeeze_last()
        if meter is not None:
            energy.count_attn_values(meter, "pv", ps.frames, vs.frames, allowed, self.num_heads, self.head_dim,
                                     None if ps.analog else ps.d.numel(), p_columns=ps.columns)
        out = product(ps, vs_rep, torch.matmul, timestep)
        out = out.transpose(1, 2).reshape(bsz, q_len, -1).contiguous()
        o = self._site("o_in", out, need_frames=False)
        return self._linear(self.o_proj, o, "o_proj", tokens), None

    def _capped(self, scores: torch.Tensor) -> torch.Tensor:
        """Gemma-2's logit soft-capping, cap * tanh(scores / cap), on integrated scores (analog)."""
        if not self.softcap:
            return scores
        return torch.tanh(scores / self.softcap) * self.softcap
