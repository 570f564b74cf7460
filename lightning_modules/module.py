"""NeuronFitModule: the neuron fit (joint by default, or the paper's alternating Alg. 1; Alg. 2 on request) as a
LightningModule with manual optimization.

The math lives once, in ``spiking_lm_plugin.fitting.AlternatingFitter``; this module drives it step by
step so Lightning provides logging, checkpoints/resume, progress bars and callbacks.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from spiking_lm_plugin.fitting import AlternatingFitter, FitConfig, search_allocations
from spiking_lm_plugin.neurons import NeuronBank, NeuronSpec
from spiking_lm_plugin.sites import site_type


class NeuronFitModule(pl.LightningModule):
    def __init__(self, timesteps: int = 8, grains: int = 2, neuron: str = "multi-grain",
                 allocation: list[int] | str | None = None, rounds: int = FitConfig.rounds,
                 threshold_steps: int = FitConfig.threshold_steps, base_steps: int = FitConfig.base_steps,
                 lr_threshold: float = FitConfig.lr_threshold, lr_base: float = FitConfig.lr_base,
                 surrogate_beta: float = FitConfig.surrogate_beta, relative: bool = FitConfig.relative,
                 bias_weight: float = FitConfig.bias_weight, joint: bool = FitConfig.joint, search_steps: int = 60,
                 seed: int = FitConfig.seed) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        overrides = {"allocation": tuple(allocation)} if isinstance(allocation, (list, tuple)) else {}
        self.spec = NeuronSpec.preset(neuron, timesteps, grains, **overrides)
        if self.spec.kind == "oat":
            raise ValueError("the oat neuron is grid-searched per site, not trained: use "
                             "`spiking-lm convert --neuron oat` (or SpikingConfig(neuron='oat'))")
        self.fit_config = FitConfig(rounds=rounds, threshold_steps=threshold_steps, base_steps=base_steps,
                                    lr_threshold=lr_threshold, lr_base=lr_base, surrogate_beta=surrogate_beta,
                                    relative=relative, bias_weight=bias_weight, joint=joint, seed=seed)
        self.bank: NeuronBank | None = None
        self.fitter: AlternatingFitter | None = None
        self.register_buffer("fit_step", torch.zeros((), dtype=torch.long))
        # DDP needs one synchronized parameter; the neurons themselves are sharded by site and never synced
        self.ddp_anchor = torch.nn.Parameter(torch.zeros(1))
        self.active_phase = "threshold"
        self.site_names: list[str] = []
        self.shard: list[int] = []

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if self.bank is not None:
            return
        datamodule = self.trainer.datamodule
        self.shard = shard_indices(datamodule.samples.shape[0], self.trainer.world_size, self.trainer.global_rank)
        samples = datamodule.samples[self.shard]
        self.site_names = [datamodule.calibration.site_names[i] for i in self.shard]
        allocations = None
        if self.hparams.allocation == "search" and self.spec.fitted and self.spec.grains > 1:
            allocations = search_allocations(self.spec, samples, steps=self.hparams.search_steps,
                                             config=self.fit_config)
        torch.manual_seed(self.hparams.seed)
        self.bank = NeuronBank(self.spec, samples.shape[0], allocations)
        self.fitter = AlternatingFitter(self.bank, samples, self.fit_config)
        self.initial_loss = self.fitter.best_loss.clone()
        # each rank owns its sites: DDP must neither broadcast nor all-reduce the bank
        self._ddp_params_and_buffers_to_ignore = [f"bank.{n}" for n, _ in self.bank.named_parameters()] + \
            [f"bank.{n}" for n, _ in self.bank.named_buffers()] + ["fit_step"]

    @property
    def total_steps(self) -> int:
        return self.fitter.total_steps if self.spec.fitted else 0

    def configure_optimizers(self):
        return [self.fitter.opt_threshold, self.fitter.opt_base]

    # ------------------------------------------------------------------ training
    def training_step(self, batch: torch.Tensor, batch_idx: int):
        step = int(self.fit_step)
        if step >= self.total_steps:
            self.trainer.should_stop = True
            return None
        phase = self.active_phase
        opt_threshold, opt_base = self.optimizers()
        optimizers = {"threshold": [opt_threshold], "base": [opt_base], "joint": [opt_threshold, opt_base]}[phase]
        loss = self.fitter.loss(phase, batch[self.shard_in_batch(batch)]) + 0.0 * self.ddp_anchor.sum()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        for opt in optimizers:
            opt.step()
        self.bank.clamp_()
        self.fit_step += 1
        mean_loss = loss.detach() / self.bank.num_sites
        self.log("loss", mean_loss, prog_bar=True, rank_zero_only=True)
        self.log(f"loss_{phase}", mean_loss)
        if (step + 1) % self.fitter.steps_per_round == 0:
            self.log("round_loss", self.fitter.end_round(), prog_bar=True)
            self._log_site_types()
        if step + 1 >= self.total_steps:
            self.trainer.should_stop = True
        return loss

    def shard_in_batch(self, batch: torch.Tensor) -> slice | list[int]:
        """Rows of a full [sites, batch] minibatch that belong to this rank."""
        return self.shard if batch.shape[0] != self.bank.num_sites else slice(None)

    def _log_site_types(self) -> None:
        by_type: dict[str, list[float]] = {}
        for name, value in zip(self.site_names, self.fitter.best_loss.tolist()):
            by_type.setdefault(site_type(name), []).append(value)
        for kind, values in by_type.items():
            self.log(f"site_loss/{kind}", sum(values) / len(values))

    def best_bank(self) -> NeuronBank:
        """Load each site's best parameters (kept by copy at round ends) into the bank; idempotent."""
        self.fitter.finish()
        return self.bank

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["spiking_best"] = {k: v.clone() for k, v in self.fitter.best.items()}
        checkpoint["spiking_best_loss"] = self.fitter.best_loss.clone()
        checkpoint["spiking_grain_index"] = self.bank.grain_index.clone()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resume = checkpoint

    def on_fit_start(self) -> None:
        resume = getattr(self, "_resume", None)
        if resume is not None:
            self.fitter.best = {k: v.clone() for k, v in resume["spiking_best"].items()}
            self.fitter.best_loss = resume["spiking_best_loss"].clone()
            self._resume = None


def shard_indices(num_sites: int, world_size: int, rank: int) -> list[int]:
    """Sites of one rank: every ``world_size``-th site, padded by repeating its last site so all ranks
    hold the same number (all_gather needs equal shapes; a repeated site is fitted twice, harmlessly)."""
    size = -(-num_sites // world_size)
    own = list(range(rank, num_sites, world_size)) or [num_sites - 1]
    return own + [own[-1]] * (size - len(own))
