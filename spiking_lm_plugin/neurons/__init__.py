"""The phase-coding neuron family (paper eq. 1-3, 7-8), its presets and surrogates.

The torch-free recipe names (``NeuronSpec``, ``PRESETS``, allocations) load eagerly; the rest on first use.
"""

from importlib import import_module

from .spec import PRESETS, NeuronSpec, compositions, uniform_allocation

_LAZY = {
    "NeuronBank": ".bank", "decode_frames": ".dynamics", "encode_frames": ".dynamics", "phase_code": ".dynamics",
    "spike_steps": ".dynamics", "SigmoidSurrogate": ".surrogate", "StraightThroughSurrogate": ".surrogate",
}

__all__ = ["NeuronSpec", "PRESETS", "compositions", "uniform_allocation", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
