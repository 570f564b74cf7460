"""The fitting recipe (paper Alg. 1): a torch-free dataclass, so command lines can read its defaults fast."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FitConfig:
    rounds: int = 4
    threshold_steps: int = 40
    base_steps: int = 20
    lr_threshold: float = 0.02
    lr_base: float = 0.01
    surrogate_beta: float = 5.0     # in units of each step's weight d_t (NeuronBank.surrogate_unit)
    batch_samples: int = 4096
    relative: bool = True
    bias_weight: float = 0.0
    joint: bool = True              # False: the paper's alternating Alg. 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rounds", "threshold_steps", "base_steps", "batch_samples"):
            if getattr(self, name) < 0 or (name in ("rounds", "batch_samples") and getattr(self, name) < 1):
                raise ValueError(f"FitConfig.{name} must be positive, got {getattr(self, name)}")
