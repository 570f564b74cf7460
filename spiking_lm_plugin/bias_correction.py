"""Bias correction (optional stage after the fit; docs/DESIGN.md, "Bias correction").

A neuron's coding error SN(x) - x has a mean per channel that does not average out: every token adds it,
through the next linear, to the same outputs. The standard post-training-quantization remedy is to measure
that mean and fold W times it into the linear's bias. Here the mean is kept at the site as an ``offset``
that the decoded value gives back (the executions add -W offset once, as a bias), at the sites that feed a
linear layer (products have no bias to fold into).

The means are measured on calibration windows with the spiking model itself and in network order within one
forward: each site's offset is set before the later sites see their inputs, so a later site's mean includes
the corrections upstream of it.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .model_surgery import spiking_sites
from .runtime import runtime_of
from .sites import LINEAR_INPUT_SITE_TYPES, site_type

#: calibration windows the means are measured on, in one forward (4,096 tokens at 512 per window)
CORRECTION_WINDOWS = 8


@torch.no_grad()
def measure_offsets(model: nn.Module, windows: torch.Tensor, site_names: list[str]) -> dict[str, torch.Tensor]:
    """Per-channel mean coding error E[SN(x) - x] of every named site that feeds a linear, measured with the
    fused spiking model on ``windows`` (one forward); the offsets are installed as they are measured and
    stay installed."""
    sites = spiking_sites(model)
    names = [n for n in site_names if site_type(n) in LINEAR_INPUT_SITE_TYPES and sites[n].ready]
    for name in names:
        sites[name].set_offset(None)
    offsets: dict[str, torch.Tensor] = {}

    def correct(name: str, args, spikes):
        x = args[0]
        error = (spikes.value - x).reshape(-1, x.shape[-1]).double().mean(0).float()
        if not bool(torch.isfinite(error).all()):
            raise ValueError(f"site {name}: non-finite coding error while measuring the bias correction")
        sites[name].set_offset(error)
        offsets[name] = error.cpu()
        offset = error.to(spikes.value.dtype)
        return replace(spikes, value=spikes.value - offset, offset=offset)

    hooks = [sites[n].register_forward_hook(lambda m, args, out, n=n: correct(n, args, out)) for n in names]
    device = next(model.parameters()).device
    try:
        with runtime_of(model).use(mode="fused", meter=None):
            model(windows[:CORRECTION_WINDOWS].to(device))
    finally:
        for hook in hooks:
            hook.remove()
    missing = [n for n in names if n not in offsets]
    if missing:
        raise RuntimeError(f"bias correction: sites {missing[:3]} never fired in the forward")
    return offsets
