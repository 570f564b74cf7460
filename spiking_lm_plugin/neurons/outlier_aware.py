"""LAS's outlier-aware threshold (OAT) neuron as a phase-coding neuron (LAS, eq. 3-7).

LAS splits each activation at a threshold sigma into a normal part clip(u, sigma) and an outlier part
u - clip(u, sigma), each coded by its own binary sub-neuron. With the shared dynamics (eq. 1-3) the two
sub-neurons are two runs of steps on one membrane: the outlier run comes first, with weights
(1 - sigma) 2^-k and thresholds sigma + d_t, so it fires only on the excess over sigma; the normal run
then codes what is left, with weights sigma 2^-k (k counts the steps within each run). sigma and the
split of T between the runs are chosen per site on the calibration samples (grid search on the MSE);
nothing is learned by gradient, as in LAS.
"""

from __future__ import annotations

import torch

from .bank import NeuronBank, grain_index_of
from .spec import NeuronSpec

#: sigma candidates: quantiles of the site's nonzero normalized magnitudes
SPLIT_QUANTILES = (0.9, 0.97, 0.99, 0.997, 0.999, 0.9999)


class OutlierAwareBank(NeuronBank):
    """Two binary sub-neurons per site (outlier run, then normal run) split at ``split`` (units of tau)."""

    def __init__(self, spec: NeuronSpec, num_sites: int, allocations=None) -> None:
        super().__init__(spec, num_sites, allocations)
        self.register_buffer("split", torch.full((num_sites,), 0.5))
        self.h_rel.requires_grad_(False)
        self.theta_rel.requires_grad_(False)
        self.bases.requires_grad_(False)

    def _step_in_run(self) -> torch.Tensor:
        """k: the 1-based index of each step within its run (t minus the steps of earlier runs)."""
        g = self.grain_index
        t = torch.arange(1, g.shape[1] + 1, device=g.device)
        return (t - (g[:, None, :] < g[:, :, None]).sum(-1)).float()

    def weights(self) -> torch.Tensor:
        if not hasattr(self, "split"):          # NeuronBank.__init__ calls weights() before the buffer exists
            return super().weights()
        k = self._step_in_run()
        outlier = self.grain_index == 0
        scale = torch.where(outlier, 1 - self.split[:, None], self.split[:, None])
        return scale * torch.pow(2.0, -k)

    def thresholds(self) -> torch.Tensor:
        return self.weights() + torch.where(self.grain_index == 0, self.split[:, None], 0.0)

    def resets(self) -> torch.Tensor:
        return self.weights()

    @torch.no_grad()
    def export(self) -> dict[str, torch.Tensor]:
        out = super().export()
        out["split"] = self.split.clone()
        return out

    @torch.no_grad()
    def load_export(self, tensors: dict[str, torch.Tensor]) -> None:
        self.grain_index.copy_(tensors["grain_index"])
        self.v0.copy_(tensors["v0"])
        if "split" in tensors:
            self.split.copy_(tensors["split"])


@torch.no_grad()
def fit_outlier_aware(spec: NeuronSpec, samples: torch.Tensor, relative: bool = True) -> OutlierAwareBank:
    """Grid search per site over the split sigma (data quantiles) and the outlier run length."""
    from ..fitting.alternating import evaluate

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
