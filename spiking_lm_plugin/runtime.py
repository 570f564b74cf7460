"""Shared execution state of a converted model: which execution runs and which meter counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .energy import EnergyMeter

#: ``ann``: every site analog (the ANN, still metered); ``record``: analog + feed the reservoirs;
#: ``fused``: each neuron returns SN(x), ops run once; ``timestep``: ops run on spike frames [T, ...].
MODES = ("ann", "record", "fused", "timestep")


@dataclass
class SpikingRuntime:
    mode: str = "fused"
    meter: "EnergyMeter | None" = None
    #: record mode only: which tokens of the current batch feed the reservoirs ([B, L], True = record) and
    #: the eta above which a down_proj input token is left out from its layer on (None: keep every token)
    record_keep: torch.Tensor | None = None
    outlier_eta: float | None = None
    outlier_tokens: int = 0

    def flag_outliers(self, token_max: torch.Tensor) -> None:
        """Leave out (from here on) the tokens whose max|x| [B, L] exceeds eta times the batch median."""
        if self.outlier_eta is None or self.record_keep is None or token_max.shape != self.record_keep.shape:
            return
        outliers = token_max > self.outlier_eta * token_max.median().clamp_min(1e-12)
        new = outliers & self.record_keep
        if bool(new.any()):
            self.outlier_tokens += int(new.sum())
            self.record_keep = self.record_keep & ~outliers

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown execution mode {mode!r}; choose one of {MODES}")
        self.mode = mode

    @property
    def spiking(self) -> bool:
        return self.mode in ("fused", "timestep")

    @property
    def timestep(self) -> bool:
        return self.mode == "timestep"
