"""The fitting engine (paper Alg. 1): all sites in one problem, parameters [sites, T], samples [sites, N].

:class:`FitEngine` owns everything about a gradient fit: the schedule (rounds of N1 + N2 steps), which
parameters learn in which phase, the clamps, the minibatches and each site's best parameters (kept by
copy at every round end). ``fit_bank`` and the Lightning module both drive it step by step, so the
schedule is the same whoever calls it. Two schedules:

- joint (default): theta, h and B are updated together at every step with the surrogate gradient.
- alternating (``joint=False``, the paper's Alg. 1): N1 steps on (theta, h) with the surrogate, then N2
  steps on the bases B with the true gradient (spikes are fixed by theta/h, so dSN/dB is exact).

Joint is the default because on SmolLM2-135M it gave lower perplexity at every T and fitting seed
measured, with a smaller seed spread (docs/BENCHMARKS.md, seed-spread table).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..neurons import NeuronBank, NeuronSpec, SigmoidSurrogate
from .fit_config import FitConfig
from .objective import check_samples, evaluate, site_mse, site_scale, spike_cost
from .registry import GRADIENT, fitter_for, fitter_name, register_fitter

#: phase -> which parameter groups learn (index 0: thresholds/resets, 1: bases)
PHASE_GROUPS = {"threshold": (True, False), "base": (False, True), "joint": (True, True)}


@dataclass
class FitResult:
    bank: NeuronBank
    loss: torch.Tensor                      # final per-site objective on all samples
    initial_loss: torch.Tensor              # per-site objective before fitting
    round_loss: list[float] = field(default_factory=list)   # mean objective after each round
    history: list[tuple[str, float]] = field(default_factory=list)  # (phase, loss) per step


class Minibatches:
    """Endless random column minibatches [sites, batch_samples] of samples [sites, N] (all of them when
    N is smaller), drawn from a generator seeded with ``seed``: the engine and the Lightning data module
    draw the same sequence."""

    def __init__(self, samples: torch.Tensor, batch_samples: int, seed: int) -> None:
        self.samples, self.batch_samples = samples, batch_samples
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> "Minibatches":
        return self

    def __next__(self) -> torch.Tensor:
        n = self.samples.shape[1]
        if n <= self.batch_samples:
            return self.samples
        idx = torch.randint(0, n, (self.batch_samples,), generator=self.generator, device="cpu")
        return self.samples.index_select(1, idx.to(self.samples.device))   # a gather, much faster than [:, idx]


class FitEngine:
    """One gradient fit of ``bank`` on samples [sites, N]; :meth:`step` runs one step of the schedule."""

    def __init__(self, bank: NeuronBank, samples: torch.Tensor, config: FitConfig,
                 site_weights: torch.Tensor | None = None) -> None:
        check_samples(samples)
        self.bank, self.samples, self.config = bank, samples, config
        #: fan-out weight per site (mean 1) of the spike penalty; None: every site alike
        self.site_weights = site_weights
        self.surrogate = SigmoidSurrogate(config.surrogate_beta)
        self.minibatches = Minibatches(samples, config.batch_samples, config.seed)
        self.opt_threshold = torch.optim.Adam([bank.theta_rel, bank.h_rel], lr=config.lr_threshold)
        self.opt_base = torch.optim.Adam([bank.bases], lr=config.lr_base)
        self.best = bank.export()
        self.best_loss = self.evaluate()

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt_threshold, self.opt_base]

    @property
    def steps_per_round(self) -> int:
        return self.config.steps_per_round

    @property
    def total_steps(self) -> int:
        return self.config.total_steps if self.bank.spec.fitted else 0

    def phase_at(self, step: int) -> str:
        """'threshold', 'base' or 'joint' for a global step index."""
        if self.config.joint:
            return "joint"
        return "threshold" if step % self.steps_per_round < self.config.threshold_steps else "base"

    def round_ends_at(self, step: int) -> bool:
        return (step + 1) % self.steps_per_round == 0

    def learning(self, phase: str) -> tuple[bool, bool]:
        """(thresholds learn, bases learn) in ``phase``, after what the neuron family allows."""
        thresholds, bases = PHASE_GROUPS[phase]
        return thresholds and self.bank.spec.learn_thresholds, bases and self.bank.spec.learn_bases

    def freeze_for(self, phase: str) -> None:
        """requires_grad per phase, so a step of one phase cannot touch the other phase's parameters."""
        thresholds, bases = self.learning(phase)
        spec = self.bank.spec
        self.bank.theta_rel.requires_grad_(thresholds)
        self.bank.h_rel.requires_grad_(thresholds and not spec.tied)
        self.bank.bases.requires_grad_(bases)

    def evaluate(self) -> torch.Tensor:
        """Per-site objective on all samples (exact steps), the spike cost included."""
        c = self.config
        return evaluate(self.bank, self.samples, c.relative, c.bias_weight, c.spike_penalty, self.site_weights)

    def loss(self, phase: str, batch: torch.Tensor) -> torch.Tensor:
        surrogate = None if phase == "base" else self.surrogate
        c = self.config
        approx, spikes = self.bank.code(batch, surrogate=surrogate, spike_grad=bool(c.spike_penalty))
        loss = site_mse(approx, batch, site_scale(batch, c.relative), c.bias_weight)
        if c.spike_penalty:
            loss = loss + spike_cost(spikes, self.bank.spec.timesteps, c.spike_penalty, self.site_weights)
        return loss.sum()

    def step(self, step: int, batch: torch.Tensor | None = None,
             backward: Callable[[torch.Tensor], None] | None = None,
             optimizers: Sequence | None = None, extra_loss: torch.Tensor | None = None) -> tuple[str, torch.Tensor]:
        """One optimization step of the schedule at ``step``: returns (phase, summed loss).

        batch: the minibatch (default: the engine's next one); backward / optimizers: the caller's (Lightning's
        ``manual_backward`` and wrapped optimizers, in this engine's order); extra_loss: added before backward.
        """
        phase = self.phase_at(step)
        self.freeze_for(phase)
        thresholds, bases = self.learning(phase)
        threshold_opt, base_opt = optimizers if optimizers is not None else self.optimizers
        active = ([threshold_opt] if thresholds else []) + ([base_opt] if bases else [])
        loss = self.loss(phase, next(self.minibatches) if batch is None else batch)
        if extra_loss is not None:
            loss = loss + extra_loss
        if active and loss.requires_grad:
            for opt in active:
                opt.zero_grad(set_to_none=True)
            (backward or torch.Tensor.backward)(loss)
            for opt in active:
                opt.step()
            self.bank.clamp_()
        return phase, loss.detach()

    @torch.no_grad()
    def end_round(self) -> float:
        """Evaluate on all samples and keep each site's best parameters by copy."""
        loss = self.evaluate()
        better = loss < self.best_loss
        if better.any():
            current = self.bank.export()
            for key, value in current.items():
                self.best[key][better] = value[better]
            self.best_loss = torch.where(better, loss, self.best_loss)
        return float(loss.mean())

    def finish(self) -> torch.Tensor:
        """Load each site's best parameters into the bank (idempotent); returns their losses."""
        self.bank.load_export(self.best)
        return self.best_loss.clone()


def fit_bank(bank: NeuronBank, samples: torch.Tensor, config: FitConfig | None = None,
             progress: Callable[[int, int, str, float], None] | None = None,
             site_weights: torch.Tensor | None = None) -> FitResult:
    """Fit ``bank`` in place on normalized samples ``[sites, N]`` (u = |x| / tau)."""
    config = config or FitConfig()
    engine = FitEngine(bank, samples, config, site_weights)
    initial = engine.best_loss.clone()
    result = FitResult(bank, initial, initial)
    for step in range(engine.total_steps):
        phase, loss = engine.step(step)
        value = float(loss) / bank.num_sites
        result.history.append((phase, value))
        if progress is not None:
            progress(step + 1, engine.total_steps, phase, value)
        if engine.round_ends_at(step):
            result.round_loss.append(engine.end_round())
    result.loss = engine.finish()
    return result


@register_fitter("gradient")
def fit_by_gradient(spec: NeuronSpec, samples: torch.Tensor, config: FitConfig,
                    allocations: list[tuple[int, ...]] | None = None,
                    progress: Callable[[int, int, str, float], None] | None = None,
                    spike_caps: torch.Tensor | None = None, site_weights: torch.Tensor | None = None) -> FitResult:
    """The fitter of every gradient-trained family: a new bank fitted by :class:`FitEngine`."""
    bank = NeuronBank(spec, samples.shape[0], allocations, spike_caps).to(samples.device)
    return fit_bank(bank, samples, config, progress, site_weights)


def fit_neurons(spec: NeuronSpec, samples: torch.Tensor, config: FitConfig | None = None,
                allocations: list[tuple[int, ...]] | None = None,
                progress: Callable[[int, int, str, float], None] | None = None,
                spike_caps: torch.Tensor | None = None, site_weights: torch.Tensor | None = None) -> FitResult:
    """Fit ``samples.shape[0]`` sites with the fitter ``spec``'s family registered (the one-call entry);
    ``spike_caps`` [sites]: per-site spike budgets inside the dynamics while fitting (+inf: none);
    ``site_weights`` [sites]: the fan-out weights of the spike penalty (``FitConfig.spike_penalty``)."""
    check_samples(samples)
    config = config or FitConfig()
    fitter = fitter_for(spec)
    if spike_caps is None and not config.spike_penalty:
        return fitter(spec, samples, config, allocations, progress)
    if fitter_name(spec) != GRADIENT:
        raise ValueError(f"the {spec.kind!r} neuron family is fitted by {fitter_name(spec)!r}, which takes neither "
                         "spike budgets nor a spike penalty; fit it without mask_in_fit and spike_penalty")
    return fitter(spec, samples, config, allocations, progress, spike_caps=spike_caps, site_weights=site_weights)
