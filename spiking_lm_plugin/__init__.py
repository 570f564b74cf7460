"""spiking-lm: convert LLaMA-family LLMs into spiking LLMs with multi-granularity phase coding.

    model = AutoModelForCausalLM.from_pretrained(...)
    state = spiking_lm_plugin.convert(model, SpikingConfig(timesteps=8, grains=2), tokenizer=tok)
    spiking_lm_plugin.save(model, "out/")            # later: spiking_lm_plugin.load(base_model, "out/")
"""

from .checkpoint import CheckpointError, load, save
from .config import SpikingConfig
from .conversion import SpikingState, convert, set_mode
from .energy import EnergyConstants, EnergyMeter
from .fitting import FitConfig
from .neurons import NeuronSpec

__all__ = ["CheckpointError", "EnergyConstants", "EnergyMeter", "FitConfig", "NeuronSpec", "SpikingConfig",
           "SpikingState", "convert", "load", "save", "set_mode"]
__version__ = "0.1.0"
