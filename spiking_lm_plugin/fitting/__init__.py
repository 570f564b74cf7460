"""Batched neuron fitting (paper Alg. 1 and 2): one engine, a fitter per neuron family.

Names load on first use, so ``FitConfig`` (torch-free) costs no torch import.
"""

from importlib import import_module

from .fit_config import FitConfig

_LAZY = {
    "FitEngine": ".engine", "Minibatches": ".engine", "FitResult": ".engine", "fit_bank": ".engine", "fit_neurons": ".engine",
    "evaluate": ".objective", "search_allocations": ".grain_search",
    "register_fitter": ".registry", "fitter_name": ".registry",
}

__all__ = ["FitConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
