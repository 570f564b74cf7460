"""How many outputs one spike of each site feeds (what its spikes cost in ACs), read off the model.

Used to weight the spike penalty of the energy-aware fit (``FitConfig.spike_penalty``). Attention sites
fan out to the (query, key) pairs of a causal window of the calibration's length, on average."""

from __future__ import annotations

import torch
from torch import nn


def site_fanouts(model: nn.Module, site_names: list[str], sequence_length: int, prefix: int = 0) -> dict[str, float]:
    layers = model.model.layers
    pairs = (sequence_length + 1) / 2 + prefix           # keys a query meets, queries a key meets, on average
    out: dict[str, float] = {}
    for name in site_names:
        kind = name.rsplit(".", 1)[-1]
        if kind == "head_in":
            out[name] = float(model.lm_head.linear.out_features)
            continue
        layer = layers[int(name.split(".")[1])]
        attn, mlp = layer.self_attn, layer.mlp
        groups = attn.groups
        out[name] = float({
            "attn_in": sum(linear.out_features for linear in attn.input_linears()),
            "q": pairs, "k": pairs * groups, "v": pairs * groups, "softmax": attn.head_dim,
            "o_in": attn.output_linear.out_features,
            "mlp_in": mlp.gate_proj.out_features + mlp.up_proj.out_features,
            "gate_act": 1, "up": 1,
            "down_in": mlp.down_proj.out_features,
        }[kind])
    return out


def fanout_weights(fanouts: dict[str, float], site_names: list[str]) -> torch.Tensor | None:
    """Per-site weights of the spike penalty (mean 1), or None when the fan-outs are unknown."""
    if not fanouts or any(n not in fanouts for n in site_names):
        return None
    w = torch.tensor([fanouts[n] for n in site_names], dtype=torch.float32)
    return w / w.mean()
