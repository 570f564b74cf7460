"""The phase-coding neuron family (paper eq. 1-3, 7-8), its presets and surrogates."""

from .bank import NeuronBank
from .dynamics import decode_frames, encode_frames, phase_code, spike_steps
from .spec import PRESETS, NeuronSpec, compositions, uniform_allocation
from .surrogate import SigmoidSurrogate, StraightThroughSurrogate

__all__ = [
    "NeuronBank", "NeuronSpec", "PRESETS", "SigmoidSurrogate", "StraightThroughSurrogate",
    "compositions", "decode_frames", "encode_frames", "phase_code", "spike_steps", "uniform_allocation",
]
