"""The layer-wise calibration recipe: a torch-free dataclass (read by the command line and SpikingConfig)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerwiseConfig:
    """tau_scales / threshold_shifts: the candidates tried per site (1.0 / 0.0, the fitted values, are
    always kept as the fallback); windows x length: the calibration tokens the blocks are tuned on;
    holdout_windows: further calibration windows (the last ones, never tuned on, cut to ``length``) that
    decide whether each block's change is kept; guard_windows: the calibration windows before those, at
    their full length, that neither the tuning nor a block's decision saw: the whole stage is kept only if
    it lowers the mean token loss (nats) on them by ``min_gain`` (docs/DESIGN.md "Layer-wise
    calibration": a guard on the block decisions' own windows kept a stage that made held-out text worse)."""

    tau_scales: tuple[float, ...] = (0.8, 1.25)
    threshold_shifts: tuple[float, ...] = (-0.25, 0.25)
    windows: int = 4
    length: int = 256
    holdout_windows: int = 8
    guard_windows: int = 8
    min_gain: float = 0.005

    def __post_init__(self) -> None:
        object.__setattr__(self, "tau_scales", tuple(float(x) for x in self.tau_scales))
        object.__setattr__(self, "threshold_shifts", tuple(float(x) for x in self.threshold_shifts))
        for name in ("windows", "length", "holdout_windows", "guard_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"LayerwiseConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.min_gain >= 0:
            raise ValueError(f"LayerwiseConfig.min_gain must be >= 0, got {self.min_gain}")
        if any(x <= 0 for x in self.tau_scales):
            raise ValueError(f"LayerwiseConfig.tau_scales must be > 0, got {self.tau_scales}")
        if any(abs(x) >= 1 for x in self.threshold_shifts):
            raise ValueError(f"LayerwiseConfig.threshold_shifts must be in (-1, 1), got {self.threshold_shifts}")
