"""NeuronFitModule: the neuron fit as a LightningModule with manual optimization.

The recipe is one :class:`SpikingConfig` (the CLI's ``spiking:`` section, shared with the data module).
Every step goes through ``spiking_lm_plugin.fitting.FitEngine``, which owns the schedule, the phase ->
parameter groups, the clamps and the best-so-far per site; so the schedule is right without any callback
(callbacks only observe and log) and ``spiking-lm convert`` and this module fit the same neurons.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from spiking_lm_plugin.config import SpikingConfig
from spiking_lm_plugin.fitting import FitEngine, fitter_name
from spiking_lm_plugin.fitting.registry import GRADIENT
from spiking_lm_plugin.neurons import NeuronBank
from spiking_lm_plugin.sites import site_type


class NeuronFitModule(pl.LightningModule):
    def __init__(self, spiking: SpikingConfig | None = None) -> None:
        super().__init__()
        self.spiking = spiking or SpikingConfig()
        self.save_hyperparameters({"spiking": self.spiking.to_dict()})
        self.automatic_optimization = False
        if self.spiking.mixed_timesteps:
            raise ValueError("site_timesteps (a T per site type) is fitted by `spiking-lm convert` and the Python "
                             "API; the Lightning trainer fits one T for every site")
        if self.spiking.bias_correction or self.spiking.layerwise is not None:
            raise ValueError("bias_correction and layerwise run the spiking model after the fit; the Lightning "
                             "trainer fits from cached activations: use `spiking-lm convert` for them")
        self.spec = self.spiking.neuron_spec()
        fitter = fitter_name(self.spec)
        if fitter != GRADIENT:
            raise ValueError(f"the {self.spiking.neuron} neuron is fitted by {fitter}, not by gradient steps: use "
                             f"`spiking-lm convert --neuron {self.spiking.neuron}`")
        self.bank: NeuronBank | None = None
        self.engine: FitEngine | None = None
        self.register_buffer("fit_step", torch.zeros((), dtype=torch.long))
        # DDP needs one synchronized parameter; the neurons themselves are sharded by site and never synced
        self.ddp_anchor = torch.nn.Parameter(torch.zeros(1))
        self.active_phase: str | None = None       # the phase of the latest step (the engine decides it)
        self.site_names: list[str] = []
        self.shard: list[int] = []

    @property
    def fit_config(self):
        return self.spiking.fit

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if self.bank is not None:
            return
        from spiking_lm_plugin.calibration.fanout import fanout_weights
        from spiking_lm_plugin.conversion import fit_spike_caps, searched_allocations

        datamodule = self.trainer.datamodule
        if datamodule.config != self.spiking:
            raise ValueError("the data module's recipe differs from the module's: give both the same SpikingConfig "
                             "(spiking-lm-train links its `spiking:` section into both)")
        self.shard = shard_indices(datamodule.samples.shape[0], self.trainer.world_size, self.trainer.global_rank)
        samples = datamodule.samples[self.shard]
        self.site_names = [datamodule.calibration.site_names[i] for i in self.shard]
        caps = fit_spike_caps(self.spiking, self.site_names)
        self.bank = NeuronBank(self.spec, samples.shape[0], searched_allocations(self.spiking, samples, self.spec), caps)
        weights = fanout_weights(datamodule.calibration.fanouts, datamodule.calibration.site_names)
        self.engine = FitEngine(self.bank, samples, self.fit_config, None if weights is None else weights[self.shard])
        self.initial_loss = self.engine.best_loss.clone()
        # each rank owns its sites: DDP must neither broadcast nor all-reduce the bank
        self._ddp_params_and_buffers_to_ignore = [f"bank.{n}" for n, _ in self.bank.named_parameters()] + \
            [f"bank.{n}" for n, _ in self.bank.named_buffers()] + ["fit_step"]

    @property
    def total_steps(self) -> int:
        return self.engine.total_steps

    def configure_optimizers(self):
        return self.engine.optimizers

    # ------------------------------------------------------------------ training
    def training_step(self, batch: torch.Tensor, batch_idx: int):
        step = int(self.fit_step)
        if step >= self.total_steps:
            self.trainer.should_stop = True
            return None
        phase, loss = self.engine.step(step, batch[self.shard_in_batch(batch)], backward=self.manual_backward,
                                       optimizers=self.optimizers(), extra_loss=0.0 * self.ddp_anchor.sum())
        self.active_phase = phase
        self.fit_step += 1
        mean_loss = loss / self.bank.num_sites
        self.log("loss", mean_loss, prog_bar=True, rank_zero_only=True)
        self.log(f"loss_{phase}", mean_loss)
        if self.engine.round_ends_at(step):
            self.log("round_loss", self.engine.end_round(), prog_bar=True)
            self._log_site_types()
        if step + 1 >= self.total_steps:
            self.trainer.should_stop = True
        return loss

    def shard_in_batch(self, batch: torch.Tensor) -> slice | list[int]:
        """Rows of a full [sites, batch] minibatch that belong to this rank."""
        return self.shard if batch.shape[0] != self.bank.num_sites else slice(None)

    def _log_site_types(self) -> None:
        by_type: dict[str, list[float]] = {}
        for name, value in zip(self.site_names, self.engine.best_loss.tolist()):
            by_type.setdefault(site_type(name), []).append(value)
        for kind, values in by_type.items():
            self.log(f"site_loss/{kind}", sum(values) / len(values))

    def best_bank(self) -> NeuronBank:
        """Load each site's best parameters (kept by copy at round ends) into the bank; idempotent."""
        self.engine.finish()
        return self.bank

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["spiking_best"] = {k: v.clone() for k, v in self.engine.best.items()}
        checkpoint["spiking_best_loss"] = self.engine.best_loss.clone()
        checkpoint["spiking_grain_index"] = self.bank.grain_index.clone()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resume = checkpoint

    def on_fit_start(self) -> None:
        resume = getattr(self, "_resume", None)
        if resume is not None:
            self.engine.best = {k: v.clone() for k, v in resume["spiking_best"].items()}
            self.engine.best_loss = resume["spiking_best_loss"].clone()
            self._resume = None


def shard_indices(num_sites: int, world_size: int, rank: int) -> list[int]:
    """Sites of one rank: every ``world_size``-th site, padded by repeating its last site so all ranks
    hold the same number (all_gather needs equal shapes; a repeated site is fitted twice, harmlessly)."""
    size = -(-num_sites // world_size)
    own = list(range(rank, num_sites, world_size)) or [num_sites - 1]
    return own + [own[-1]] * (size - len(own))
