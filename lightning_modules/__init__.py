"""Lightning trainer for spiking-lm neurons: `spiking-lm-train fit --config configs/<recipe>.yaml`."""

from .callbacks import BaseLoggingCallback, CheckpointExportCallback, PhaseSwitchCallback
from .data import ActivationDataModule
from .module import NeuronFitModule

__all__ = ["ActivationDataModule", "BaseLoggingCallback", "CheckpointExportCallback", "NeuronFitModule",
           "PhaseSwitchCallback"]
