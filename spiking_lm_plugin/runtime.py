"""Shared execution state of a converted model: which execution runs and which meter counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .energy import EnergyMeter

#: ``ann``: every site analog (the ANN, still metered); ``record``: analog + feed the reservoirs;
#: ``fused``: each neuron returns SN(x), ops run once; ``timestep``: ops run on spike frames [T, ...].
MODES = ("ann", "record", "fused", "timestep")


@dataclass
class SpikingRuntime:
    mode: str = "fused"
    meter: "EnergyMeter | None" = None

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
