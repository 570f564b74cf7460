"""How each neuron family is fitted: fitters register under a name and claim families (``NeuronSpec.kind``).

Every family is fitted by gradient descent (``engine.fit_by_gradient``) unless a fitter claims it, as the
grid search of the ``oat`` family does; callers look the fitter up here instead of branching on kinds.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ..neurons import NeuronSpec

Fitter = Callable[..., "object"]   # (spec, samples, config, allocations, progress) -> FitResult

GRADIENT = "gradient"
_FITTERS: dict[str, Fitter] = {}
_FAMILIES: dict[str, str] = {}
_BUILTIN_MODULES = (".engine", ".outlier_aware_search")


def register_fitter(name: str, families: tuple[str, ...] = ()) -> Callable[[Fitter], Fitter]:
    """Register ``fn`` as fitter ``name`` and make it the fitter of ``families``."""
    def register(fn: Fitter) -> Fitter:
        _FITTERS[name] = fn
        for family in families:
            _FAMILIES[family] = name
        return fn
    return register


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        import_module(module, __package__)


def fitter_name(spec: "NeuronSpec") -> str:
    """The name of the fitter of ``spec``'s family."""
    _load_builtins()
    return _FAMILIES.get(spec.kind, GRADIENT)


def fitter_for(spec: "NeuronSpec") -> Fitter:
    return _FITTERS[fitter_name(spec)]
