"""The fitting recipe (paper Alg. 1): a torch-free dataclass, so command lines can read its defaults fast."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FitConfig:
    """The fitting schedule and optimizer (paper Alg. 1).

    Attributes:
        rounds: rounds N; each ends by keeping every site's best parameters.
        threshold_steps: N1, steps per round on theta/h (joint: part of the round).
        base_steps: N2, steps per round on the bases (joint: part of the round).
        lr_threshold: Adam learning rate of theta/h.
        lr_base: Adam learning rate of the bases.
        surrogate_beta: sigmoid surrogate sharpness, in units of each step's initial weight d0_t.
        batch_samples: samples per site in one minibatch.
        relative: divide each site's MSE by its E[u^2], so every site weighs the same.
        bias_weight: weight of the squared mean error added to the MSE.
        joint: update theta, h and B together at every step; false: the paper's alternating Alg. 1.
        spike_penalty: lambda of the energy-aware objective: each site's coding error plus lambda x its firing
            rate, weighted by the outputs each of its spikes feeds (mean 1 over the sites); 0 = the paper's
            objective.
        seed: seed of the minibatch draws.
    """

    rounds: int = 4
    threshold_steps: int = 40
    base_steps: int = 20
    lr_threshold: float = 0.02
    lr_base: float = 0.01
    surrogate_beta: float = 5.0
    batch_samples: int = 4096
    relative: bool = True
    bias_weight: float = 0.0
    joint: bool = True
    spike_penalty: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.spike_penalty >= 0:
            raise ValueError(f"FitConfig.spike_penalty must be >= 0, got {self.spike_penalty}")
        for name in ("rounds", "threshold_steps", "base_steps", "batch_samples"):
            if getattr(self, name) < 0 or (name in ("rounds", "batch_samples") and getattr(self, name) < 1):
                raise ValueError(f"FitConfig.{name} must be positive, got {getattr(self, name)}")

    @property
    def steps_per_round(self) -> int:
        return self.threshold_steps + self.base_steps

    @property
    def total_steps(self) -> int:
        """Gradient steps of the whole fit (the one place this formula lives)."""
        return self.rounds * self.steps_per_round
