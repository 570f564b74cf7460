"""`spiking-lm-train` (= `python -m lightning_modules`): the LightningCLI of the neuron trainer.

    spiking-lm-train fit --config configs/smollm2_t8_g2.yaml [--model.timesteps 10] [--print_config]
"""

from __future__ import annotations

from pytorch_lightning.cli import LightningCLI

from .data import ActivationDataModule
from .module import NeuronFitModule

DESCRIPTION = ("Fit the spiking neurons of a LLaMA-family model with Lightning (joint updates of theta, h "
               "and B by default; --model.joint false for the paper's alternating Alg. 1; Alg. 2 with "
               "--model.allocation search). "
               "Recipes live in configs/; CheckpointExportCallback writes a checkpoint that "
               "`lm_eval --model spiking-hf` and spiking_lm_plugin.load read.")


def main(args=None) -> None:
    LightningCLI(NeuronFitModule, ActivationDataModule, save_config_kwargs={"overwrite": True}, args=args,
                 parser_kwargs={"description": DESCRIPTION})


if __name__ == "__main__":
    main()
