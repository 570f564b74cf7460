"""Grain-allocation search (paper Alg. 2): DARTS-style softmax weights over candidate allocations.

Every candidate of every site is a row of one big bank ([sites * K, T]); the mixture
sum_k softmax(alpha_s)_k SN_k(u) is trained jointly with the surrogate and the argmax allocation per site
wins; the fit stage then refits the winners from scratch.
"""

from __future__ import annotations


import torch

from ..neurons import NeuronBank, NeuronSpec, SigmoidSurrogate, compositions
from .fit_config import FitConfig
from .objective import check_samples, site_mse, site_scale


def search_allocations(
    spec: NeuronSpec,
    samples: torch.Tensor,
    steps: int = 60,
    lr_alpha: float = 0.1,
    config: FitConfig | None = None,
    candidates: list[tuple[int, ...]] | None = None,
) -> list[tuple[int, ...]]:
    """Return the winning allocation per site."""
    check_samples(samples)
    config = config or FitConfig()
    candidates = candidates or compositions(spec.timesteps, spec.grains)
    sites, k = samples.shape[0], len(candidates)
    if k == 1:
        return [candidates[0]] * sites
    gen = torch.Generator().manual_seed(config.seed)
    bank = NeuronBank(spec, sites * k, [c for _ in range(sites) for c in candidates]).to(samples.device)
    alpha = torch.zeros(sites, k, device=samples.device, requires_grad=True)
    params = [p for p in (bank.theta_rel, bank.h_rel, bank.bases) if p.requires_grad]
    opt = torch.optim.Adam([{"params": params, "lr": config.lr_threshold}, {"params": [alpha], "lr": lr_alpha}])
    surrogate = SigmoidSurrogate(config.surrogate_beta)
    n = samples.shape[1]
    for _ in range(steps):
        idx = torch.randint(0, n, (min(config.batch_samples, n),), generator=gen).to(samples.device)
        batch = samples[:, idx]
        approx = bank(batch.repeat_interleave(k, dim=0), surrogate=surrogate).view(sites, k, -1)
        mixed = (torch.softmax(alpha, dim=1)[:, :, None] * approx).sum(1)
        loss = site_mse(mixed, batch, site_scale(batch, config.relative)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bank.clamp_()
    winners = alpha.detach().argmax(dim=1).tolist()
    return [candidates[w] for w in winners]
