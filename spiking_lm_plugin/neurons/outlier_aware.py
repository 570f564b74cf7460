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

from .bank import NeuronBank
from .spec import NeuronSpec

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
