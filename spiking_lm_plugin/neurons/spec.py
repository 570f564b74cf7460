"""Neuron specification and the preset family (one line for the user: ``NeuronSpec.preset("binary", 8)``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


def uniform_allocation(timesteps: int, grains: int) -> tuple[int, ...]:
    """Split T steps into ``grains`` contiguous runs, as equal as possible (longer runs last)."""
    validate_steps(timesteps, grains)
    base, extra = divmod(timesteps, grains)
    return tuple(base + (1 if i >= grains - extra else 0) for i in range(grains))


def validate_steps(timesteps: int, grains: int) -> None:
    if not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"timesteps T must be an integer >= 1, got {timesteps!r}")
    if not isinstance(grains, int) or grains < 1:
        raise ValueError(f"grains must be an integer >= 1, got {grains!r}")
    if grains > timesteps:
        raise ValueError(f"more grains ({grains}) than time steps (T={timesteps}): each grain needs >= 1 step")


def validate_allocation(allocation: tuple[int, ...], timesteps: int) -> tuple[int, ...]:
    allocation = tuple(int(a) for a in allocation)
    validate_steps(timesteps, len(allocation))
    if any(a < 1 for a in allocation):
        raise ValueError(f"grain allocation {allocation} has an empty grain; every grain needs >= 1 step")
    if sum(allocation) != timesteps:
        raise ValueError(f"grain allocation {allocation} sums to {sum(allocation)}, not T={timesteps}")
    return allocation


def compositions(timesteps: int, grains: int) -> list[tuple[int, ...]]:
    """All contiguous allocations of T steps into ``grains`` non-empty runs (Alg. 2 candidates)."""
    validate_steps(timesteps, grains)
    if grains == 1:
        return [(timesteps,)]
    out = []
    for first in range(1, timesteps - grains + 2):
        out.extend((first, *rest) for rest in compositions(timesteps - first, grains - 1))
    return out


@dataclass(frozen=True)
class NeuronSpec:
    """Everything that defines a neuron family; fitted values live in :class:`NeuronBank`.

    ``d_t = scale * B_{g(t)}^(-t)`` in units of tau (eq. 7); ``theta``/``h`` start at ``d`` (eq. 8).
    """

    kind: str = "multi-grain"
    timesteps: int = 8
    allocation: tuple[int, ...] = (4, 4)
    base_init: float = 2.0
    weight_scale: float = 1.0
    v0: float = 0.0
    levels: int = 2
    max_spikes: int | None = None
    tied: bool = False
    learn_thresholds: bool = True
    learn_bases: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "allocation", validate_allocation(tuple(self.allocation), self.timesteps))
        if self.base_init < 1.0:
            raise ValueError(f"base_init must be >= 1, got {self.base_init}")
        if self.levels < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}")
        if self.max_spikes is not None and self.max_spikes < 1:
            raise ValueError(f"max_spikes must be >= 1 or None, got {self.max_spikes}")

    @property
    def grains(self) -> int:
        return len(self.allocation)

    @property
    def fitted(self) -> bool:
        return self.learn_thresholds or self.learn_bases

    def with_allocation(self, allocation: tuple[int, ...]) -> "NeuronSpec":
        return replace(self, allocation=tuple(allocation))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["allocation"] = list(self.allocation)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NeuronSpec":
        data = dict(data)
        data["allocation"] = tuple(data["allocation"])
        return cls(**data)

    @classmethod
    def preset(cls, name: str, timesteps: int = 8, grains: int | None = None, **overrides: Any) -> "NeuronSpec":
        """Build a preset by name; see :data:`PRESETS` for the list and their equations."""
        if name not in PRESETS:
            raise ValueError(f"unknown neuron preset {name!r}; choose one of {sorted(PRESETS)}")
        validate_steps(timesteps, 1)
        return PRESETS[name](timesteps, grains, **overrides)


def binary(timesteps: int, grains: int | None = None, **kw: Any) -> NeuronSpec:
    """LAS / conventional phase coding: theta_t = h_t = d_t = tau 2^-t, one grain, not fitted.

    SN(x) = sign(x) tau floor(2^T |x|/tau) 2^-T below saturation (the T-bit binary expansion).
    """
    return NeuronSpec("binary", timesteps, (timesteps,), learn_thresholds=False, learn_bases=False, **kw)


def single_grain(timesteps: int, grains: int | None = None, **kw: Any) -> NeuronSpec:
    """One learnable base B with decoupled theta_t, h_t: d_t = tau B^-t (eq. 7 with n = 1)."""
    return NeuronSpec("single-grain", timesteps, (timesteps,), **kw)


def multi_grain(timesteps: int, grains: int | None = None, **kw: Any) -> NeuronSpec:
    """Ours: d_t = tau B_{g(t)}^-t over n contiguous grains, decoupled learnable theta_t, h_t (eq. 7-8)."""
    kw.setdefault("allocation", uniform_allocation(timesteps, grains or min(2, timesteps)))
    return NeuronSpec("multi-grain", timesteps, **kw)


def tied(timesteps: int, grains: int | None = None, **kw: Any) -> NeuronSpec:
    """Ablation: multi-grain with the reset tied to the threshold, h_t = theta_t (Table 7)."""
    kw.setdefault("allocation", uniform_allocation(timesteps, grains or min(2, timesteps)))
    return NeuronSpec("tied", timesteps, tied=True, **kw)


def two_spike(timesteps: int, grains: int | None = None, **kw: Any) -> NeuronSpec:
    """SpikedAttention's one-spike phase code relaxed to at most 2 spikes:
    s_t = H(v_t - tau 2^-t) * 1[sum_{i<t} s_i < 2], d_t = tau 2^-t."""
    return NeuronSpec("two-spike", timesteps, (timesteps,), max_spikes=2,
                      learn_thresholds=False, learn_bases=False, **kw)


def rate(timesteps: int, grains: int | None = None, **kw: Any) -> NeuronSpec:
    """IF rate coding with uniform levels: theta = h = d = tau/T, v_1 = |x| + tau/(2T) (round to nearest);
    SN(x) = sign(x) tau min(round(T |x|/tau), T) / T."""
    return NeuronSpec("rate", timesteps, (timesteps,), base_init=1.0, weight_scale=1.0 / timesteps,
                      v0=0.5 / timesteps, learn_thresholds=False, learn_bases=False, **kw)


def ttfs(timesteps: int, grains: int | None = None, **kw: Any) -> NeuronSpec:
    """Time-to-first-spike: one spike at the first t with |x| >= tau 2^-t, worth d_t = tau 2^-t
    (a log2 quantizer with T levels)."""
    return NeuronSpec("ttfs", timesteps, (timesteps,), max_spikes=1,
                      learn_thresholds=False, learn_bases=False, **kw)


def integer(timesteps: int, grains: int | None = None, levels: int = 4, **kw: Any) -> NeuronSpec:
    """Multi-threshold neuron of the dual-conversion paper: L levels per step,
    s_t = clamp(floor(v_t / d_t), 0, L-1), d_t = tau L^-t, v_{t+1} = v_t - d_t s_t (base-L expansion)."""
    return NeuronSpec("integer", timesteps, (timesteps,), base_init=float(levels), levels=levels,
                      learn_thresholds=False, learn_bases=False, **kw)


def oat(timesteps: int, grains: int | None = None, **kw: Any) -> NeuronSpec:
    """LAS's outlier-aware threshold neuron: an outlier run then a normal run of binary steps split at a
    per-site sigma (see :mod:`.outlier_aware`); sigma and the run lengths are grid-searched, not learned."""
    if timesteps < 2:
        raise ValueError(f"the oat neuron needs T >= 2 (an outlier run and a normal run), got T={timesteps}")
    run = max(1, timesteps // 4)
    kw.setdefault("allocation", (run, timesteps - run))
    return NeuronSpec("oat", timesteps, learn_thresholds=False, learn_bases=False, **kw)


PRESETS = {
    "binary": binary,
    "single-grain": single_grain,
    "multi-grain": multi_grain,
    "tied": tied,
    "two-spike": two_spike,
    "rate": rate,
    "ttfs": ttfs,
    "integer": integer,
    "oat": oat,
}
