"""The fitter of the ``oat`` family (LAS): a per-site grid search over the split sigma and the outlier
run length on the MSE; nothing is learned by gradient, as in LAS."""

from __future__ import annotations

from typing import Callable

import torch

from ..neurons import NeuronSpec
from ..neurons.bank import grain_index_of
from ..neurons.outlier_aware import OutlierAwareBank
from .engine import FitResult
from .fit_config import FitConfig
from .objective import evaluate
from .registry import register_fitter

#: sigma candidates: quantiles of the site's nonzero normalized magnitudes
SPLIT_QUANTILES = (0.9, 0.97, 0.99, 0.997, 0.999, 0.9999)


@torch.no_grad()
def search_outlier_split(spec: NeuronSpec, samples: torch.Tensor, relative: bool = True) -> OutlierAwareBank:
    """Grid search per site over the split sigma (data quantiles) and the outlier run length."""
    sites, T = samples.shape[0], spec.timesteps
    nonzero = torch.where(samples > 0, samples, torch.nan)
    quantiles = torch.nanquantile(nonzero[:, :65536].float(), torch.tensor(SPLIT_QUANTILES), dim=1).T  # [S, Q]
    quantiles = torch.nan_to_num(quantiles, nan=0.5).clamp(1e-4, 0.999)
    best_loss = torch.full((sites,), float("inf"))
    best_split = torch.full((sites,), 0.5)
    best_run = torch.full((sites,), 1, dtype=torch.long)
    for run in range(1, T):
        bank = OutlierAwareBank(spec.with_allocation((run, T - run)), sites).to(samples.device)
        for q in range(quantiles.shape[1]):
            bank.split.copy_(quantiles[:, q])
            loss = evaluate(bank, samples, relative).cpu()
            better = loss < best_loss
            best_loss = torch.where(better, loss, best_loss)
            best_split = torch.where(better, quantiles[:, q].cpu(), best_split)
            best_run = torch.where(better, torch.full_like(best_run, run), best_run)
    allocations = [(int(r), T - int(r)) for r in best_run]
    bank = OutlierAwareBank(spec, sites, allocations).to(samples.device)
    bank.split.copy_(best_split)
    bank.grain_index.copy_(torch.stack([grain_index_of(a) for a in allocations]).to(samples.device))
    return bank


@register_fitter("grid-search", families=("oat",))
def fit_by_grid_search(spec: NeuronSpec, samples: torch.Tensor, config: FitConfig,
                       allocations: list[tuple[int, ...]] | None = None,
                       progress: Callable[[int, int, str, float], None] | None = None) -> FitResult:
    bank = search_outlier_split(spec, samples, config.relative)
    loss = evaluate(bank, samples, config.relative)
    return FitResult(bank, loss, loss.clone())
