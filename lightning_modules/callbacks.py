"""Callbacks of the neuron trainer (they observe, the fitting engine decides): phase switches (Alg. 1),
base logging (paper Fig. 4), checkpoint export."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch

PHASE_IDS = {"threshold": 0, "base": 1, "joint": 2}


class PhaseSwitchCallback(pl.Callback):
    """Logs the phase of every step (``phase``: 0 = theta/h, 1 = B, 2 = joint, also on the progress bar)
    and the step at which each switch happened (``switches``). It only observes: the fitting engine
    decides the phase and which parameters learn in it."""

    def __init__(self) -> None:
        self.switches: list[tuple[int, str]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        phase = pl_module.active_phase
        if phase is None or outputs is None:
            return
        if not self.switches or self.switches[-1][1] != phase:
            self.switches.append((int(pl_module.fit_step) - 1, phase))
        pl_module.log("phase", float(PHASE_IDS[phase]), prog_bar=True)


class BaseLoggingCallback(pl.Callback):
    """Records every site's bases and the loss per phase at each step; logs the mean base per grain; at the
    end writes ``bases.json`` and a Figure-4-style PNG (loss with h/theta and B phases shaded, base
    trajectories per grain)."""

    def __init__(self, output_dir: str | None = None, plot: bool = True) -> None:
        self.output_dir = Path(output_dir) if output_dir else None     # None: the trainer's default_root_dir
        self.plot = plot
        self.steps: list[int] = []
        self.phases: list[str] = []
        self.losses: list[float] = []
        self.bases: list[list[list[float]]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if outputs is None or pl_module.bank is None:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        bases = pl_module.bank.bases.detach().cpu()
        self.steps.append(int(pl_module.fit_step))
        self.phases.append(pl_module.active_phase)
        self.losses.append(float(loss) / pl_module.bank.num_sites)
        self.bases.append(bases.tolist())
        for g, value in enumerate(bases.mean(0).tolist()):
            pl_module.log(f"base/grain{g + 1}", value)

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.steps:
            return
        self.output_dir = self.output_dir or Path(trainer.default_root_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        pl_module.best_bank()      # what the checkpoint exports: each site's best parameters
        (self.output_dir / "bases.json").write_text(json.dumps({
            "steps": self.steps, "phases": self.phases, "loss": self.losses,
            "site_names": pl_module.site_names, "bases": self.bases,
            "final_bases": pl_module.bank.bases.detach().cpu().tolist()}))
        if self.plot:
            self.figure(self.output_dir / "figure4.png")

    def figure(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax_loss, ax_base) = plt.subplots(1, 2, figsize=(11, 4))
        start = 0
        for i in range(1, len(self.phases) + 1):   # shade each contiguous phase run
            if i == len(self.phases) or self.phases[i] != self.phases[start]:
                color = {"threshold": "tab:blue", "base": "tab:orange", "joint": "tab:green"}[self.phases[start]]
                for ax in (ax_loss, ax_base):
                    ax.axvspan(self.steps[start] - 0.5, self.steps[i - 1] + 0.5, color=color, alpha=0.12, lw=0)
                start = i
        ax_loss.plot(self.steps, self.losses, color="black", lw=1)
        ax_loss.set_yscale("log")
        legend = ("green: theta, h and B updated jointly" if set(self.phases) == {"joint"}
                  else "blue: h/theta phase, orange: B phase")
        ax_loss.set(title=f"fitting loss ({legend})", xlabel="step", ylabel="mean relative MSE")
        bases = torch.tensor(self.bases)                       # [steps, sites, grains]
        for g in range(bases.shape[2]):
            mean = bases[:, :, g].mean(1)
            lo, hi = bases[:, :, g].quantile(0.1, dim=1), bases[:, :, g].quantile(0.9, dim=1)
            ax_base.plot(self.steps, mean, label=f"B{g + 1} (mean over sites)")
            ax_base.fill_between(self.steps, lo, hi, alpha=0.2)
        ax_base.set(title="bases per grain (10-90% of sites)", xlabel="step", ylabel="B")
        ax_base.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


class CheckpointExportCallback(pl.Callback):
    """When fitting ends, write the converted checkpoint (``spiking_config.json`` + ``neurons.safetensors``)
    that ``spiking-hf`` and ``spiking_lm_plugin.load`` read; ``output_dir`` None: ``<default_root_dir>/checkpoint``."""

    def __init__(self, output_dir: str | None = None) -> None:
        self.output_dir = Path(output_dir) if output_dir else None

    def on_train_end(self, trainer, pl_module) -> None:
        from spiking_lm_plugin.checkpoint import write_checkpoint
        from spiking_lm_plugin.conversion import build_state
        from spiking_lm_plugin.fitting import FitResult

        bank, best_loss, initial = gather_shards(trainer, pl_module)     # a collective: every rank calls it
        if not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        result = FitResult(bank, best_loss, initial)
        info = dm.model_info
        state = build_state(pl_module.spiking, dm.calibration, result, info["base_model"], info["fingerprint"], 0.0)
        state.fit["trainer"] = "lightning"
        state.fit["steps"] = int(pl_module.fit_step)
        write_checkpoint(self.output_dir or Path(trainer.default_root_dir) / "checkpoint", state,
                         info["architecture"], info["num_layers"])


def gather_shards(trainer, pl_module):
    """The full bank (all sites, best parameters) and losses, gathered from every rank's shard."""
    from spiking_lm_plugin.neurons import NeuronBank

    from .module import shard_indices

    local = pl_module.best_bank().export()
    local["best_loss"] = pl_module.engine.best_loss
    local["initial_loss"] = pl_module.initial_loss
    world = trainer.world_size
    num_sites = trainer.datamodule.samples.shape[0]
    if world > 1:
        gathered = {k: pl_module.all_gather(v.contiguous()) for k, v in local.items()}   # [world, shard, ...]
    else:
        gathered = {k: v.unsqueeze(0) for k, v in local.items()}
    full = {k: torch.empty((num_sites, *v.shape[2:]), dtype=v.dtype) for k, v in gathered.items()}
    for rank in range(world):
        for j, site in enumerate(shard_indices(num_sites, world, rank)):
            for k, v in gathered.items():
                full[k][site] = v[rank, j].cpu()
    allocations = [tuple(torch.bincount(g, minlength=1).tolist()) for g in full["grain_index"]]
    allocations = [tuple(a for a in alloc if a > 0) for alloc in allocations]
    from spiking_lm_plugin.conversion import fit_spike_caps

    caps = fit_spike_caps(pl_module.spiking, trainer.datamodule.calibration.site_names)
    bank = NeuronBank(pl_module.spec, num_sites, allocations, caps)
    bank.load_export({k: full[k] for k in ("d", "theta", "h", "v0", "bases", "grain_index")})
    return bank, full["best_loss"], full["initial_loss"]
