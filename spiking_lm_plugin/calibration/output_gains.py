"""Output-aware fitting samples: how much each channel's coding error moves what its site feeds.

The fit minimizes each site's error in units of u = |x| / tau, every sample alike (eq. 9), so with a per-channel
tau a channel with a large tau, or one whose next weights are large, weighs as little as any other although
its error reaches the block output tau_c^2 g_c times larger. ``g_c`` (the channel's gain) is the squared norm of
the weight column the channel feeds, or for a factor of a product the mean square of the other factor there.
Drawing the fitting samples with probability (tau_c^2 g_c)^alpha per channel spends the neuron's resolution where
the output error is made; alpha = 0 is the paper's uniform sample (docs/DESIGN.md, "Output-aware samples").
"""

from __future__ import annotations

import torch
from torch import nn

from ..sites import site_type
from ..weight_quantization import dense_weight
from .reservoir import SiteReservoir

#: the other factor of each product factor's product (Q K^T and the gate product)
PRODUCT_PARTNER = {"q": "k", "k": "q", "gate_act": "up", "up": "gate_act"}


def _weight(linear: nn.Module) -> torch.Tensor:
    """The float weight of a linear (or the wrapper holding it as ``.linear``), torchao weights dequantized."""
    return dense_weight(getattr(linear, "linear", linear), torch.float32).detach()


def column_energy(*linears: nn.Module) -> torch.Tensor:
    """sum over the linears of ||W[:, c]||^2 per input channel c."""
    return sum(_weight(linear).pow(2).sum(0).cpu() for linear in linears)


def _mean_square(reservoir: SiteReservoir | None) -> torch.Tensor | None:
    """E[x_c^2] per channel over the reservoir's samples (None where no reservoir or no samples)."""
    if reservoir is None or reservoir.filled == 0:
        return None
    sums = torch.zeros(reservoir.channels).index_add_(0, reservoir.channel_ids, reservoir.values.pow(2))
    counts = torch.zeros(reservoir.channels).index_add_(0, reservoir.channel_ids, torch.ones(reservoir.filled))
    return sums / counts.clamp(min=1)


def _down_columns(mlp: nn.Module) -> torch.Tensor:
    """||W_down[:, c]||^2 in the basis of the gate product (before the online transform folded into down_proj)."""
    weight = _weight(mlp.down_proj)
    transform = getattr(mlp, "online_transform", None)
    if transform is not None:
        weight = transform.undo(weight)
    return weight.pow(2).sum(0).cpu()


def channel_gains(model: nn.Module, reservoirs: dict[str, SiteReservoir]) -> dict[str, torch.Tensor]:
    """Per site with more than one channel, g_c >= 0 (see the module docstring); the softmax map has one channel
    and gets none. Read off the prepared model (rotations folded) and the calibration's reservoirs."""
    layers = model.model.layers
    gains: dict[str, torch.Tensor] = {}
    down_columns: dict[int, torch.Tensor] = {}       # one undo of the folded transform per layer
    for name, reservoir in reservoirs.items():
        kind = site_type(name)
        if kind == "head_in":
            gains[name] = column_energy(model.lm_head.linear)
            continue
        if kind == "softmax":
            continue
        prefix = name.rsplit(".", 1)[0] + "."
        index = int(name.split(".")[1])
        layer = layers[index]
        attn, mlp = layer.self_attn, layer.mlp
        if kind == "attn_in":
            gain = column_energy(*attn.input_linears())
        elif kind == "mlp_in":
            gain = column_energy(mlp.gate_proj, mlp.up_proj)
        elif kind == "down_in":
            gain = column_energy(mlp.down_proj)
        elif kind == "o_in":
            gain = column_energy(attn.output_linear)
        elif kind == "v":        # every query head of the group reads the value channel through o_proj
            gain = column_energy(attn.output_linear).view(-1, attn.head_dim).sum(0)
        else:                    # a factor of a product: the other factor scales its error
            gain = _mean_square(reservoirs.get(prefix + PRODUCT_PARTNER[kind]))
            if gain is not None and kind in ("gate_act", "up"):
                if index not in down_columns:
                    down_columns[index] = _down_columns(mlp)
                gain = gain * down_columns[index]
        if gain is not None and gain.numel() == reservoir.channels:
            gains[name] = gain
    return gains


def sample_weights(channel_ids: torch.Tensor, tau: torch.Tensor, gain: torch.Tensor | None,
                   power: float) -> torch.Tensor | None:
    """Each sample's drawing weight (tau_c^2 g_c)^power for its channel c; None: draw uniformly (power 0, a
    per-tensor tau, no gain, or no channel with a positive weight)."""
    if power == 0 or gain is None or tau.numel() != gain.numel() or tau.numel() == 1:
        return None
    per_channel = (tau.double().pow(2) * gain.double()).clamp(min=0).pow(power)
    weights = per_channel[channel_ids]
    if not bool(torch.isfinite(weights).all()) or not bool((weights > 0).any()):
        return None
    return weights
