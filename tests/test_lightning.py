"""The Lightning trainer: the real LightningCLI in a subprocess, phases, resume, cache, Figure 4."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from safetensors.torch import load_file

import spiking_lm_plugin as slm
from lightning_modules import (ActivationDataModule, BaseLoggingCallback, CheckpointExportCallback, NeuronFitModule,
                               PhaseSwitchCallback)

TRAIN = str(Path(sys.executable).with_name("spiking-lm-train"))


TINY_SPIKING = {"timesteps": 6, "grains": 2, "calibration_tokens": 1024, "sequence_length": 128,
                "samples_per_site": 2048, "fit": {"rounds": 2, "threshold_steps": 6, "base_steps": 4,
                                                 "batch_samples": 1024}}


def tiny_recipe(tmp_path: Path, model_dir: Path, callbacks: bool = True) -> Path:
    """A small delta on configs/base.yaml, as a user would write one."""
    recipe = {
        "spiking": TINY_SPIKING,
        "data": {"model": str(model_dir)},
        "trainer": {"accelerator": "cpu", "default_root_dir": str(tmp_path / "run"),
                    "enable_progress_bar": False, "callbacks": [],
                    "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger",
                               "init_args": {"save_dir": str(tmp_path / "logs")}}},
    }
    if callbacks:
        recipe["trainer"]["callbacks"] = [
            {"class_path": "lightning_modules.PhaseSwitchCallback"},
            {"class_path": "lightning_modules.BaseLoggingCallback",
             "init_args": {"output_dir": str(tmp_path / "run")}},
            {"class_path": "lightning_modules.CheckpointExportCallback",
             "init_args": {"output_dir": str(tmp_path / "run" / "checkpoint")}}]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.smoke
def test_lightning_cli_fit_writes_a_loadable_checkpoint_that_beats_binary(tmp_path, tiny_model_dir):
    env = {**os.environ, "SPIKING_LM_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([TRAIN, "fit", "--config", str(tiny_recipe(tmp_path, tiny_model_dir)),
                           "--spiking.fit.threshold_steps", "8"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoint"
    meta = json.loads((ckpt / "spiking_config.json").read_text())
    assert meta["fit"]["trainer"] == "lightning" and meta["fit"]["steps"] == 2 * (8 + 4)
    loss, binary = torch.tensor(meta["fit"]["site_loss"]), torch.tensor(meta["fit"]["site_loss_binary"])
    assert float(loss.mean()) < float(binary.mean())
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    state = slm.load(model, ckpt)
    assert state.config.timesteps == 6 and len(state.site_names) == 21
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3, 4]])).logits).all()
    png = tmp_path / "run" / "figure4.png"
    assert png.stat().st_size > 10_000
    # the logged final bases are the exported ones
    logged = torch.tensor(json.loads((tmp_path / "run" / "bases.json").read_text())["final_bases"])
    assert torch.equal(logged, load_file(str(ckpt / "neurons.safetensors"))["neurons.bases"])


@pytest.mark.smoke
def test_print_config_and_help():
    proc = subprocess.run([TRAIN, "fit", "--print_config"], capture_output=True, text=True)
    printed = yaml.safe_load(proc.stdout)
    assert proc.returncode == 0 and printed["spiking"]["fit"]["threshold_steps"] == 40
    assert printed["spiking"]["calibration_tokens"] == 16384 and printed["data"]["model"] == "smollm2-135m"
    assert "spiking" not in (printed.get("model") or {}) and "spiking" not in printed["data"]   # linked, not repeated
    proc = subprocess.run([TRAIN, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "spiking neurons" in proc.stdout


class Recorder(pl.Callback):
    """Snapshots of the bank around every step."""

    def __init__(self):
        self.records = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._before = {k: v.detach().clone() for k, v in pl_module.bank.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        after = {k: v.detach().clone() for k, v in pl_module.bank.named_parameters()}
        self.records.append((int(pl_module.fit_step), pl_module.active_phase, self._before, after))


def tiny_spiking(**overrides) -> slm.SpikingConfig:
    fit = {"rounds": 2, "threshold_steps": 5, "base_steps": 3, "batch_samples": 512, **overrides.pop("fit", {})}
    return slm.SpikingConfig(timesteps=6, calibration_tokens=1024, sequence_length=128, samples_per_site=2048,
                             fit=slm.FitConfig(**fit), **overrides)


def trainer_run(tmp_path, model_dir, callbacks, ckpt_path=None, max_steps=-1, **overrides):
    recipe = tiny_spiking(**overrides)
    dm = ActivationDataModule(model=str(model_dir), spiking=recipe)
    module = NeuronFitModule(recipe)
    trainer = pl.Trainer(max_epochs=1, max_steps=max_steps, accelerator="cpu", logger=False,
                         enable_progress_bar=False, default_root_dir=tmp_path, callbacks=callbacks)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, module, dm


def test_phases_switch_exactly_on_schedule_and_freeze_the_other_parameters(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SPIKING_LM_CACHE", str(tmp_path / "cache"))
    recorder = Recorder()
    _, module, _ = trainer_run(tmp_path, tiny_model_dir, [PhaseSwitchCallback(), recorder], fit={"joint": False})
    phases = [phase for _, phase, _, _ in recorder.records]
    assert phases == (["threshold"] * 5 + ["base"] * 3) * 2
    for step, phase, before, after in recorder.records:
        frozen = ["bases"] if phase == "threshold" else ["theta_rel", "h_rel"]
        moving = ["theta_rel"] if phase == "threshold" else ["bases"]
        assert all(torch.equal(before[k], after[k]) for k in frozen), (step, phase)
        assert any(not torch.equal(before[k], after[k]) for k in moving), (step, phase)


def test_default_schedule_is_joint_and_moves_every_parameter(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SPIKING_LM_CACHE", str(tmp_path / "cache"))
    recorder = Recorder()
    trainer_run(tmp_path, tiny_model_dir, [PhaseSwitchCallback(), recorder])
    assert [phase for _, phase, _, _ in recorder.records] == ["joint"] * 16
    for step, _, before, after in recorder.records:
        assert all(not torch.equal(before[k], after[k]) for k in ("theta_rel", "h_rel", "bases")), step


def test_second_run_hits_the_activation_cache(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SPIKING_LM_CACHE", str(tmp_path / "cache"))
    _, _, first = trainer_run(tmp_path, tiny_model_dir, [PhaseSwitchCallback()])
    _, _, second = trainer_run(tmp_path, tiny_model_dir, [PhaseSwitchCallback()])
    assert not first.cache_hit and second.cache_hit
    assert torch.equal(first.samples, second.samples)
    assert second.model_info == first.model_info


def test_resume_continues_the_same_schedule(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SPIKING_LM_CACHE", str(tmp_path / "cache"))
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=6, save_top_k=-1)
    trainer, module, _ = trainer_run(tmp_path, tiny_model_dir, [PhaseSwitchCallback(), ckpt_cb], max_steps=6,
                                     fit={"joint": False})
    assert int(module.fit_step) == 6
    saved = sorted((tmp_path / "ckpts").glob("*.ckpt"))
    assert saved
    recorder = Recorder()
    _, resumed, _ = trainer_run(tmp_path, tiny_model_dir, [PhaseSwitchCallback(), recorder], ckpt_path=saved[-1],
                                fit={"joint": False})
    steps = [s for s, _, _, _ in recorder.records]
    phases = [p for _, p, _, _ in recorder.records]
    assert steps == list(range(7, 17))                  # continues at step 7 of 16
    assert phases == ["base"] * 2 + ["threshold"] * 5 + ["base"] * 3
    assert int(resumed.fit_step) == 16


def test_export_callback_in_process(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SPIKING_LM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "ckpt"
    trainer_run(tmp_path, tiny_model_dir, [PhaseSwitchCallback(), BaseLoggingCallback(str(tmp_path / "r"), plot=False),
                                           CheckpointExportCallback(str(out))], allocation="search", search_steps=3)
    meta = json.loads((out / "spiking_config.json").read_text())
    assert meta["config"]["allocation"] == "search" and len(meta["fit"]["allocations"]) == 21


@pytest.mark.slow
def test_ddp_shards_sites_across_two_cpu_processes(tmp_path, tiny_model_dir):
    """`--trainer.strategy ddp --trainer.devices 2` on CPU (gloo): each rank fits half the sites, the export
    gathers them into one checkpoint that covers every site."""
    env = {**os.environ, "SPIKING_LM_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([TRAIN, "fit", "--config", str(tiny_recipe(tmp_path, tiny_model_dir)),
                           "--trainer.strategy", "ddp", "--trainer.devices", "2"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ckpt = tmp_path / "run" / "checkpoint"
    meta = json.loads((ckpt / "spiking_config.json").read_text())
    loss, binary = torch.tensor(meta["fit"]["site_loss"]), torch.tensor(meta["fit"]["site_loss_binary"])
    assert loss.shape == (21,) and bool((loss <= binary).all())
    from transformers import AutoModelForCausalLM

    (tmp_path / "single").mkdir()
    single = tiny_recipe(tmp_path / "single", tiny_model_dir)
    proc = subprocess.run([TRAIN, "fit", "--config", str(single)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = load_file(str(tmp_path / "single" / "run" / "checkpoint" / "neurons.safetensors"))
    two = load_file(str(ckpt / "neurons.safetensors"))
    # sites are independent problems: sharding changes the minibatch stream, not what is fitted where
    assert one["neurons.theta"].shape == two["neurons.theta"].shape
    assert torch.equal(one["tau.layers.1.down_in"], two["tau.layers.1.down_in"])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    slm.load(model, ckpt)


def test_convert_and_lightning_fit_identical_neurons_for_the_same_recipe(tmp_path, tiny_model_dir, monkeypatch):
    """One recipe, one engine: the Lightning trainer and slm.convert give bit-identical neurons and taus."""
    from spiking_lm_plugin.loading import load_base_model

    monkeypatch.setenv("SPIKING_LM_CACHE", str(tmp_path / "cache"))
    variants = [{"fit": {"joint": True}}, {"fit": {"joint": False}},
                {"fit": {"joint": True}, "spike_mask": 2, "mask_in_fit": True},     # the mask inside the fit
                {"fit": {"joint": True, "spike_penalty": 0.01}},                     # the energy-aware fit
                {"fit": {"joint": True}, "weight_bits": 4}]                          # torchao W4 weights
    for i, recipe in enumerate(variants):
        out = tmp_path / f"lightning-{i}"
        _, module, dm = trainer_run(tmp_path, tiny_model_dir, [CheckpointExportCallback(str(out))], seed=3, **recipe)
        model, tokenizer, _ = load_base_model(str(tiny_model_dir))      # as the data module loads it
        state = slm.convert(model, tiny_spiking(seed=3, **recipe), tokenizer=tokenizer, show_progress=False)
        lightning = load_file(str(out / "neurons.safetensors"))
        for key, value in state.neurons.items():
            assert torch.equal(lightning[f"neurons.{key}"], value.cpu()), (recipe, key)
        for name, tau in state.taus.items():
            assert torch.equal(lightning[f"tau.{name}"], tau.cpu()), name
        meta = json.loads((out / "spiking_config.json").read_text())
        assert meta["config"] == state.config.to_dict() and meta["weights"] == state.weights
        assert bool(state.weights) == ("weight_bits" in recipe)


def test_a_timestep_override_changes_the_headroom_like_convert_does(tiny_model_dir):
    """`--spiking.timesteps 6` on the T = 8 recipe reaches the data module too: headroom 1.0, as convert -T 6."""
    from lightning_modules.cli import SpikingTrainCLI

    from spiking_lm_plugin.cli import build_parser
    from spiking_lm_plugin.recipe_flags import recipe_from_args

    recipe = Path(__file__).resolve().parents[1] / "configs" / "smollm2_t8_g2.yaml"
    headroom = {}
    for timesteps in ("8", "6"):
        cli = SpikingTrainCLI(NeuronFitModule, ActivationDataModule, run=False,
                              args=["--config", str(recipe), "--spiking.timesteps", timesteps,
                                    "--trainer.accelerator", "cpu"])
        assert cli.model.spiking == cli.datamodule.config
        converted = recipe_from_args(build_parser().parse_args(["convert", "--out", "x", "-T", timesteps]))
        assert cli.datamodule.config == converted          # the same recipe from both front ends
        headroom[timesteps] = cli.datamodule.config.headroom
    assert headroom == {"8": 1.5, "6": 1.0}


def test_no_callbacks_still_follows_the_schedule(tmp_path, tiny_model_dir, monkeypatch):
    """A plain Trainer with no callback at all: the alternating schedule still freezes the other phase's
    parameters (the engine decides, not a callback)."""
    monkeypatch.setenv("SPIKING_LM_CACHE", str(tmp_path / "cache"))
    before_after = []

    class Snapshot(pl.Callback):      # records only: the schedule must not depend on any callback hook
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.before = {k: v.detach().clone() for k, v in pl_module.bank.named_parameters()}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            before_after.append((pl_module.active_phase, self.before,
                                 {k: v.detach().clone() for k, v in pl_module.bank.named_parameters()}))

    _, module, _ = trainer_run(tmp_path, tiny_model_dir, [], fit={"joint": False})
    assert int(module.fit_step) == 16
    _, module, _ = trainer_run(tmp_path, tiny_model_dir, [Snapshot()], fit={"joint": False})
    for phase, before, after in before_after:
        frozen = ["bases"] if phase == "threshold" else ["theta_rel", "h_rel"]
        assert all(torch.equal(before[k], after[k]) for k in frozen), phase


@pytest.mark.slow
def test_cli_without_callbacks_exports_and_logs(tmp_path, tiny_model_dir):
    """A recipe that lists no callbacks still writes the checkpoint, bases.json and figure4.png."""
    env = {**os.environ, "SPIKING_LM_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([TRAIN, "fit", "--config", str(tiny_recipe(tmp_path, tiny_model_dir, callbacks=False))],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "checkpoint" / "neurons.safetensors").is_file() and (run / "bases.json").is_file()
    assert (run / "figure4.png").stat().st_size > 10_000
