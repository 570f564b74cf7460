"""All sites' neurons as one batched set of parameters ``[sites, T]`` (the fitting problem)."""

from __future__ import annotations

import torch
from torch import nn

from .dynamics import StepSpikes, phase_code
from .kernels import compile_enabled
from .spec import NeuronSpec
from .surrogate import SigmoidSurrogate
from .surrogate_code import exact_phase_code, surrogate_phase_code


def grain_index_of(allocation: tuple[int, ...]) -> torch.Tensor:
    """g(t) for t = 1..T: the grain each step belongs to."""
    return torch.repeat_interleave(torch.arange(len(allocation)), torch.tensor(allocation))


class NeuronBank(nn.Module):
    """Neurons of ``num_sites`` sites sharing one :class:`NeuronSpec` (allocations may differ per site).

    theta and h are stored relative to the initial weights ``d0_t`` so one Adam step moves each
    threshold by the same *relative* amount whether it codes the coarse or the finest step.
    """

    def __init__(self, spec: NeuronSpec, num_sites: int, allocations: list[tuple[int, ...]] | None = None,
                 spike_caps: torch.Tensor | None = None) -> None:
        super().__init__()
        if num_sites < 1:
            raise ValueError("a neuron bank needs at least one site")
        self.spec = spec
        allocations = allocations or [spec.allocation] * num_sites
        if len(allocations) != num_sites:
            raise ValueError(f"{len(allocations)} allocations for {num_sites} sites")
        T = spec.timesteps
        grains = max(len(a) for a in allocations)
        self.register_buffer("grain_index", torch.stack([grain_index_of(spec.with_allocation(a).allocation)
                                                         for a in allocations]))
        self.register_buffer("steps", torch.arange(1, T + 1, dtype=torch.float32))
        self.register_buffer("weight_scale", torch.full((num_sites,), spec.weight_scale))
        self.register_buffer("v0", torch.full((num_sites,), spec.v0))
        self.bases = nn.Parameter(torch.full((num_sites, grains), spec.base_init), requires_grad=spec.learn_bases)
        d0 = self.weights().detach()
        self.register_buffer("d0", d0.clone())
        if spike_caps is not None and spike_caps.shape != (num_sites,):
            raise ValueError(f"spike_caps must have one value per site ({num_sites}), got {tuple(spike_caps.shape)}")
        #: per-site spike budget while fitting (+inf: none), e.g. the early-spike mask inside the dynamics
        self.spike_caps = None if spike_caps is None else spike_caps.float()
        self.theta_rel = nn.Parameter(torch.ones(num_sites, T), requires_grad=spec.learn_thresholds)
        self.h_rel = nn.Parameter(torch.ones(num_sites, T), requires_grad=spec.learn_thresholds and not spec.tied)

    @property
    def num_sites(self) -> int:
        return self.bases.shape[0]

    @property
    def allocations(self) -> list[tuple[int, ...]]:
        return [tuple(torch.bincount(g).tolist()) for g in self.grain_index]

    def weights(self) -> torch.Tensor:
        """d_t = scale * B_{g(t)}^(-t), shape [sites, T] (eq. 7)."""
        b = torch.gather(self.bases, 1, self.grain_index)
        return self.weight_scale[:, None] * b.pow(-self.steps)

    def thresholds(self) -> torch.Tensor:
        return self.theta_rel * self.d0

    def resets(self) -> torch.Tensor:
        return self.thresholds() if self.spec.tied else self.h_rel * self.d0

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep the parameters where the code is meaningful: B >= 1, theta, h > 0."""
        self.bases.clamp_(min=1.0 + 1e-4)
        self.theta_rel.clamp_(min=1e-3)
        self.h_rel.clamp_(min=1e-3)

    def budget(self):
        """What the dynamics take as ``max_spikes``: the family's budget, or per-site caps [sites, 1]."""
        if self.spike_caps is None:
            return self.spec.max_spikes
        caps = self.spike_caps.to(self.d0.device)
        if self.spec.max_spikes:
            caps = caps.clamp(max=float(self.spec.max_spikes))
        return caps[:, None]

    def forward(self, u: torch.Tensor, surrogate: StepSpikes | None = None) -> torch.Tensor:
        """SN(u) for normalized magnitudes ``u`` of shape [sites, N]. The surrogate's width is in units of
        each step's initial weight d0_t (z = (v - theta) / d0_t): one width in units of tau would blur the
        fine steps (at T = 8 the finest is tau/256) while suiting the coarse ones."""
        return self.code(u, surrogate)[0]

    def code(self, u: torch.Tensor, surrogate: StepSpikes | None = None,
             spike_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(SN(u), spikes per value) [sites, N]; ``spike_grad``: the spike count is differentiable."""
        if u.shape[0] != self.num_sites:
            raise ValueError(f"expected samples for {self.num_sites} sites, got {u.shape[0]}")
        d, theta, h = self.weights(), self.thresholds(), self.resets()
        budget = self.budget()
        if self.spec.levels == 2 and budget is None and compile_enabled():
            # one compiled kernel per pass; eagerly, autograd through the steps below is faster
            if isinstance(surrogate, SigmoidSurrogate):
                approx, spikes = surrogate_phase_code(u, theta, h, d, self.v0[:, None], self.d0, surrogate.beta)
                return approx, spikes if spike_grad else spikes.detach()
            if surrogate is None and not torch.is_grad_enabled():
                return exact_phase_code(u, theta, h, d, self.v0[:, None])
        cols = lambda p: [p[:, t : t + 1] for t in range(p.shape[1])]  # noqa: E731
        return phase_code(u, cols(theta), cols(h), cols(d), self.v0[:, None], levels=self.spec.levels,
                          max_spikes=budget, surrogate=surrogate, surrogate_scale=cols(self.d0),
                          spike_grad=spike_grad)

    @torch.no_grad()
    def export(self) -> dict[str, torch.Tensor]:
        """Effective per-site tensors: d, theta, h [sites, T], v0 [sites], bases, grain_index (copies)."""
        return {
            "d": self.weights().detach().clone(),
            "theta": self.thresholds().detach().clone(),
            "h": self.resets().detach().clone(),
            "v0": self.v0.detach().clone(),
            "bases": self.bases.detach().clone(),
            "grain_index": self.grain_index.detach().clone(),
        }

    @torch.no_grad()
    def load_export(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`export` (used to resume and to load checkpoints)."""
        self.bases.copy_(tensors["bases"])
        self.grain_index.copy_(tensors["grain_index"])
        self.v0.copy_(tensors["v0"])
        self.theta_rel.copy_(tensors["theta"] / self.d0)
        if not self.spec.tied:
            self.h_rel.copy_(tensors["h"] / self.d0)
