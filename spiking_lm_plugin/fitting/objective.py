"""The fitting objective: mean (SN(x) - x)^2 per site, optionally relative to the site's variance."""

from __future__ import annotations

import torch


def site_mse(approx: torch.Tensor, target: torch.Tensor, scale: torch.Tensor | None = None,
             bias_weight: float = 0.0) -> torch.Tensor:
    """Per-site error [sites] of [sites, N] tensors: mean (SN(x) - x)^2 + bias_weight * (mean (SN(x) - x))^2;
    ``scale`` divides it (e.g. the site's E[x^2]). The bias term matters because a systematic error
    (all-positive sites: softmax, SiLU) adds up coherently downstream while random errors average out."""
    diff = approx - target
    err = diff.pow(2).mean(dim=1)
    if bias_weight:
        err = err + bias_weight * diff.mean(dim=1).pow(2)
    return err if scale is None else err / scale


def site_scale(samples: torch.Tensor, relative: bool) -> torch.Tensor | None:
    """E[u^2] per site, so every site weighs the same in the batched sum (None: absolute MSE)."""
    if not relative:
        return None
    return samples.pow(2).mean(dim=1).clamp(min=1e-12)


def check_samples(samples: torch.Tensor) -> None:
    if samples.ndim != 2:
        raise ValueError(f"samples must be [sites, N], got shape {tuple(samples.shape)}")
    if not torch.isfinite(samples).all():
        raise ValueError("samples contain NaN or Inf; fitting needs finite activations")


def spike_cost(spikes: torch.Tensor, timesteps: int, penalty: float,
               site_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The energy term of the objective [sites]: penalty x each site's spikes per value / T (its firing
    rate), times its fan-out weight (the outputs each spike feeds, mean 1 over the sites)."""
    rate = spikes.mean(dim=1) / timesteps
    return penalty * (rate if site_weights is None else rate * site_weights.to(rate.device))


@torch.no_grad()
def evaluate(bank, samples: torch.Tensor, relative: bool = True, bias_weight: float = 0.0,
             spike_penalty: float = 0.0, site_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-site objective of a neuron bank with the exact step function (plus the spike cost when
    ``spike_penalty`` > 0)."""
    if not spike_penalty:
        return site_mse(bank(samples), samples, site_scale(samples, relative), bias_weight)
    approx, spikes = bank.code(samples)
    return site_mse(approx, samples, site_scale(samples, relative), bias_weight) + \
        spike_cost(spikes, bank.spec.timesteps, spike_penalty, site_weights)
