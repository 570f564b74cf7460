"""spiking-lm: convert LLaMA-family LLMs into spiking LLMs with multi-granularity phase coding.

    model = AutoModelForCausalLM.from_pretrained(...)
    state = spiking_lm_plugin.convert(model, SpikingConfig(timesteps=8, grains=2), tokenizer=tok)
    spiking_lm_plugin.save(model, "out/")            # later: spiking_lm_plugin.load(base_model, "out/")
    with model.spiking.use(mode="timestep", meter=EnergyMeter()): model(ids)

``convert`` = prepare -> calibrate -> fit -> install; each stage is public (docs/DESIGN.md, "Pipeline").

The public names load on first use (PEP 562), so ``spiking-lm --help`` starts without importing torch.
"""

from importlib import import_module

from .known_noise import drop_known_noise

drop_known_noise()

_PUBLIC = {
    "CheckpointError": ".checkpoint", "load": ".checkpoint", "save": ".checkpoint",
    "SpikingConfig": ".config", "LayerwiseConfig": ".layerwise_config",
    "SpikingState": ".conversion", "convert": ".conversion", "set_mode": ".conversion",
    "prepare": ".conversion", "calibrate": ".conversion", "fit": ".conversion", "install": ".conversion",
    "Calibration": ".conversion", "SpikingRuntime": ".runtime",
    "EnergyConstants": ".energy", "EnergyMeter": ".energy",
    "FitConfig": ".fitting",
    "NeuronSpec": ".neurons",
}

__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
