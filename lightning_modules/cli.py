"""`spiking-lm-train` (= `python -m lightning_modules`): the LightningCLI of the neuron trainer.

    spiking-lm-train fit --config configs/smollm2_t8_g2.yaml [--spiking.timesteps 6] [--print_config]

The recipe is one top-level ``spiking:`` section (a :class:`SpikingConfig`, the same dataclass
``spiking-lm convert`` builds), linked into both the module and the data module. Every run starts from
``configs/base.yaml``; the recipes in ``configs/`` are small deltas on it.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from pytorch_lightning.cli import LightningCLI

from spiking_lm_plugin.config import SpikingConfig

from .callbacks import BaseLoggingCallback, CheckpointExportCallback, PhaseSwitchCallback
from .data import ActivationDataModule
from .module import NeuronFitModule

DESCRIPTION = ("Fit the spiking neurons of a LLaMA-family model with Lightning. The recipe is the `spiking:` "
               "section (SpikingConfig: --spiking.timesteps, --spiking.fit.joint false for the paper's "
               "alternating Alg. 1, --spiking.allocation search for Alg. 2, ...); `data:` names the base model. "
               "Recipes live in configs/ as deltas on configs/base.yaml. The run writes <default_root_dir>/"
               "checkpoint (read by `lm_eval --model spiking-hf` and spiking_lm_plugin.load), bases.json and "
               "figure4.png, whether or not the config lists the callbacks (list them to set their options).")

#: what every run has, added when the config does not list one of the same class
STANDARD_CALLBACKS = (PhaseSwitchCallback, BaseLoggingCallback, CheckpointExportCallback)


def base_config() -> str:
    """configs/base.yaml, installed as the package data ``spiking_lm_plugin.configs``."""
    return str(Path(str(files("spiking_lm_plugin.configs"))) / "base.yaml")


class SpikingTrainCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_class_arguments(SpikingConfig, "spiking")
        parser.link_arguments("spiking", "model.spiking", apply_on="instantiate")
        parser.link_arguments("spiking", "data.spiking", apply_on="instantiate")

    def before_fit(self) -> None:
        present = {type(c) for c in self.trainer.callbacks}
        self.trainer.callbacks.extend(cls() for cls in STANDARD_CALLBACKS if cls not in present)


def main(args=None) -> None:
    SpikingTrainCLI(NeuronFitModule, ActivationDataModule, save_config_kwargs={"overwrite": True}, args=args,
                    parser_kwargs={"description": DESCRIPTION, "fit": {"default_config_files": [base_config()]}})


if __name__ == "__main__":
    main()
