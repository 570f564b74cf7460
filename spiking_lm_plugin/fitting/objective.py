"""The fitting objective: mean (SN(x) - x)^2 per site, optionally relative to the site's variance."""

from __future__ import annotations

import torch


def site_mse(approx: torch.Tensor, target: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Per-site error [sites] of [sites, N] tensors; ``scale`` divides it (e.g. the site's E[x^2])."""
    err = (approx - target).pow(2).mean(dim=1)
    return err if scale is None else err / scale


def site_scale(samples: torch.Tensor, relative: bool) -> torch.Tensor | None:
    """E[u^2] per site, so every site weighs the same in the batched sum (None: absolute MSE)."""
    if not relative:
        return None
    return samples.pow(2).mean(dim=1).clamp(min=1e-12)
