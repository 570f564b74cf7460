"""Batched neuron fitting (paper Alg. 1 and 2) and bounded activation sampling.

Names load on first use, so ``FitConfig`` (torch-free) costs no torch import.
"""

from importlib import import_module

from .fit_config import FitConfig

_LAZY = {
    "AlternatingFitter": ".alternating", "FitResult": ".alternating", "evaluate": ".alternating",
    "fit_bank": ".alternating", "fit_neurons": ".alternating",
    "search_allocations": ".grain_search", "search_and_fit": ".grain_search",
    "SiteReservoir": ".reservoir",
}

__all__ = ["FitConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
