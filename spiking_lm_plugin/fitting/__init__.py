"""Batched neuron fitting (paper Alg. 1 and 2) and bounded activation sampling."""

from .alternating import AlternatingFitter, FitConfig, FitResult, evaluate, fit_bank, fit_neurons
from .grain_search import search_allocations, search_and_fit
from .reservoir import SiteReservoir

__all__ = ["AlternatingFitter", "FitConfig", "FitResult", "SiteReservoir", "evaluate", "fit_bank",
           "fit_neurons", "search_allocations", "search_and_fit"]
