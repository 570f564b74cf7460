"""Reservoirs -> fitting samples u = |x| / tau [sites, N] and the taus (docs/DESIGN.md, "Calibration")."""

from __future__ import annotations

import torch

from ..config import SpikingConfig
from ..sites import PER_CHANNEL_SITE_TYPES, site_type
from .output_gains import sample_weights
from .reservoir import SiteReservoir


def normalized_samples(reservoirs: dict[str, SiteReservoir], config: SpikingConfig,
                       gains: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """[sites, N] magnitudes |x|/tau and the taus (per channel where ``config.tau`` says so).

    With ``config.sample_weighting`` alpha > 0 and the sites' channel ``gains`` (``output_gains.channel_gains``),
    a per-channel site's N samples are drawn with replacement, each with probability (tau_c^2 g_c)^alpha for its
    channel c: the output-aware objective as a sample the fit needs no weights for.

    With tau headroom (``config.headroom > 1`` at ``config.headroom_sites``) the calibration maxima
    replace the last samples (at most N/8), so the fit also codes the largest values it has seen (now at
    1/headroom) and the code above them stays for the larger ones held-out text brings.
    """
    gen = torch.Generator().manual_seed(config.seed)
    rows, taus = [], {}
    n = config.samples_per_site
    for name, res in reservoirs.items():
        per_channel = config.tau == "channel" and site_type(name) in PER_CHANNEL_SITE_TYPES
        site_headroom = config.headroom_at(config.timesteps_of(name))     # "auto" follows the site's own T
        headroom = site_headroom if site_type(name) in config.headroom_sites else 1.0
        u, tau = res.normalized(per_channel, headroom, config.rope_pair_tau)
        weights = sample_weights(res.channel_ids, tau, (gains or {}).get(name), config.sample_weighting) \
            if per_channel else None
        if weights is not None:
            u = u[torch.multinomial(weights, n, replacement=True, generator=gen)]
        elif u.numel() >= n:
            u = u[:n]
        else:
            u = u[torch.randint(0, u.numel(), (n,), generator=gen)]
        if site_headroom > 1.0:
            maxima = res.normalized_maxima(per_channel, headroom)
            if maxima.numel() > n // 8:
                maxima = maxima[torch.randperm(maxima.numel(), generator=gen)[: n // 8]]
            u = torch.cat([u[: n - maxima.numel()], maxima])
        rows.append(u)
        taus[name] = tau
    return torch.stack(rows), taus
