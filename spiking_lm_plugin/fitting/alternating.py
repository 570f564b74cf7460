"""Batched neuron fitting (paper Alg. 1): all sites in one problem, parameters [sites, T], samples [sites, N].

Two schedules over the same N rounds of N1 + N2 Adam steps, each round ending with an evaluation on all
samples that keeps every site's best parameters (by copy, :meth:`NeuronBank.export`, never by aliasing):

- joint (default): theta, h and B are updated together at every step with the surrogate gradient.
- alternating (``joint=False``, the paper's Alg. 1): N1 steps on (theta, h) with the surrogate, then N2
  steps on the bases B with the true gradient (spikes are fixed by theta/h, so dSN/dB is exact).

Joint is the default because on SmolLM2-135M it gives lower perplexity at every T and fitting seed we
measured, with a quarter of Alg. 1's seed spread at T = 6 (docs/BENCHMARKS.md, seed-spread table); the
paper's Table 6 found the opposite on LLaMA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..neurons import NeuronBank, NeuronSpec, SigmoidSurrogate
from .fit_config import FitConfig
from .objective import site_mse, site_scale


@dataclass
class FitResult:
    bank: NeuronBank
    loss: torch.Tensor                      # final per-site objective on all samples
    initial_loss: torch.Tensor              # per-site objective before fitting
    round_loss: list[float] = field(default_factory=list)   # mean objective after each round
    history: list[tuple[str, float]] = field(default_factory=list)  # (phase, loss) per step


def check_samples(samples: torch.Tensor) -> None:
    if samples.ndim != 2:
        raise ValueError(f"samples must be [sites, N], got shape {tuple(samples.shape)}")
    if not torch.isfinite(samples).all():
        raise ValueError("samples contain NaN or Inf; fitting needs finite activations")


@torch.no_grad()
def evaluate(bank: NeuronBank, samples: torch.Tensor, relative: bool = True, bias_weight: float = 0.0) -> torch.Tensor:
    """Per-site objective with the exact step function."""
    return site_mse(bank(samples), samples, site_scale(samples, relative), bias_weight)


class AlternatingFitter:
    """Stateful driver of the fit (joint or Alg. 1); :meth:`step` runs one optimization step of the current phase.

    The Lightning module reuses this class so the math exists once.
    """

    def __init__(self, bank: NeuronBank, samples: torch.Tensor, config: FitConfig) -> None:
        check_samples(samples)
        self.bank, self.samples, self.config = bank, samples, config
        self.surrogate = SigmoidSurrogate(config.surrogate_beta)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.opt_threshold = torch.optim.Adam([bank.theta_rel, bank.h_rel], lr=config.lr_threshold)
        self.opt_base = torch.optim.Adam([bank.bases], lr=config.lr_base)
        self.best = bank.export()
        self.best_loss = evaluate(bank, samples, config.relative, config.bias_weight)

    @property
    def steps_per_round(self) -> int:
        return self.config.threshold_steps + self.config.base_steps

    @property
    def total_steps(self) -> int:
        return self.config.rounds * self.steps_per_round

    def phase_at(self, step: int) -> str:
        """'threshold' or 'base' for a global step index (or 'joint')."""
        if self.config.joint:
            return "joint"
        return "threshold" if step % self.steps_per_round < self.config.threshold_steps else "base"

    def _batch(self) -> torch.Tensor:
        n = self.samples.shape[1]
        if n <= self.config.batch_samples:
            return self.samples
        idx = torch.randint(0, n, (self.config.batch_samples,), generator=self.generator, device="cpu")
        return self.samples[:, idx.to(self.samples.device)]

    def loss(self, phase: str, batch: torch.Tensor) -> torch.Tensor:
        surrogate = None if phase == "base" else self.surrogate
        approx = self.bank(batch, surrogate=surrogate)
        return site_mse(approx, batch, site_scale(batch, self.config.relative), self.config.bias_weight).sum()

    def step(self, step: int) -> tuple[str, float]:
        phase = self.phase_at(step)
        learn_thr = self.bank.spec.learn_thresholds and phase in ("threshold", "joint")
        learn_base = self.bank.spec.learn_bases and phase in ("base", "joint")
        optimizers = ([self.opt_threshold] if learn_thr else []) + ([self.opt_base] if learn_base else [])
        batch = self._batch()
        loss = self.loss(phase, batch)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        if optimizers:
            loss.backward()
            for opt in optimizers:
                opt.step()
            self.bank.clamp_()
        return phase, float(loss.detach()) / self.bank.num_sites

    @torch.no_grad()
    def end_round(self) -> float:
        """Evaluate on all samples and keep each site's best parameters by copy."""
        loss = evaluate(self.bank, self.samples, self.config.relative, self.config.bias_weight)
        better = loss < self.best_loss
        if better.any():
            current = self.bank.export()
            for key, value in current.items():
                self.best[key][better] = value[better]
            self.best_loss = torch.where(better, loss, self.best_loss)
        return float(loss.mean())

    def finish(self) -> torch.Tensor:
        self.bank.load_export(self.best)
        return self.best_loss.clone()


def fit_bank(
    bank: NeuronBank,
    samples: torch.Tensor,
    config: FitConfig | None = None,
    progress: Callable[[int, int, str, float], None] | None = None,
) -> FitResult:
    """Fit ``bank`` in place on normalized samples ``[sites, N]`` (u = |x| / tau)."""
    config = config or FitConfig()
    torch.manual_seed(config.seed)
    fitter = AlternatingFitter(bank, samples, config)
    initial = fitter.best_loss.clone()
    result = FitResult(bank, initial, initial)
    if not bank.spec.fitted:
        return result
    step = 0
    for _ in range(config.rounds):
        for _ in range(fitter.steps_per_round):
            phase, value = fitter.step(step)
            result.history.append((phase, value))
            step += 1
            if progress is not None:
                progress(step, fitter.total_steps, phase, value)
        result.round_loss.append(fitter.end_round())
    result.loss = fitter.finish()
    return result


def fit_neurons(
    spec: NeuronSpec,
    samples: torch.Tensor,
    config: FitConfig | None = None,
    allocations: list[tuple[int, ...]] | None = None,
    progress: Callable[[int, int, str, float], None] | None = None,
) -> FitResult:
    """Create a bank for ``samples.shape[0]`` sites and fit it (the one-call entry point)."""
    check_samples(samples)
    if spec.kind == "oat":
        from ..neurons.outlier_aware import fit_outlier_aware

        bank = fit_outlier_aware(spec, samples, (config or FitConfig()).relative)
        loss = evaluate(bank, samples, (config or FitConfig()).relative)
        return FitResult(bank, loss, loss.clone())
    bank = NeuronBank(spec, samples.shape[0], allocations).to(samples.device)
    return fit_bank(bank, samples, config, progress)
