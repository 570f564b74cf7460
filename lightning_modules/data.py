"""ActivationDataModule: the calibration forward once, per-site samples cached on disk, served as minibatches."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, IterableDataset

from spiking_lm_plugin.assets import cache_dir, resolve_model
from spiking_lm_plugin.config import SpikingConfig
from spiking_lm_plugin.fitting.engine import Minibatches
from spiking_lm_plugin.calibration.stage import Calibration, calibrate


class SampleBatches(IterableDataset):
    """The fitting engine's minibatches as an endless dataset (the module decides when to stop)."""

    def __init__(self, samples: torch.Tensor, batch_samples: int, seed: int) -> None:
        self.samples, self.batch_samples, self.seed = samples, batch_samples, seed

    def __iter__(self):
        return Minibatches(self.samples, self.batch_samples, self.seed)


class ActivationDataModule(pl.LightningDataModule):
    """Per-site activation samples of a base model (alias, path or hub id) for the recipe ``spiking``.

    The recipe is the same :class:`SpikingConfig` the module fits (the CLI links its ``spiking:`` section
    into both), so the tau headroom follows the module's T. Cached under
    ``$SPIKING_LM_CACHE/activations/<key>`` where the key hashes the model (its resolved path and weight
    files) and every recipe field the samples depend on; a second run with the same key skips the
    calibration forward entirely. Minibatches: ``spiking.fit.batch_samples`` columns, ``spiking.fit.seed``.
    """

    def __init__(self, model: str = "smollm2-135m", spiking: SpikingConfig | None = None, device: str = "cpu",
                 dtype: str = "float32", device_map: str | None = None, cache: bool = True) -> None:
        super().__init__()
        self.config = spiking or SpikingConfig()
        self.save_hyperparameters({"model": model, "device": device, "dtype": dtype, "device_map": device_map,
                                   "cache": cache})
        self.calibration: Calibration | None = None
        self.model_info: dict = {}
        self.cache_hit = False

    # ------------------------------------------------------------------ cache
    def cache_key(self) -> str:
        path = resolve_model(self.hparams.model)
        weights = []
        if Path(path).is_dir():
            weights = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime))
                             for p in Path(path).iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
        recipe = {k: v for k, v in self.config.to_dict().items()
                  if k in ("calibration_text", "calibration_tokens", "sequence_length", "samples_per_site",
                           "sites", "tau", "headroom_sites", "rope_pair_tau", "sample_weighting", "rotation",
                           "online_transform", "prefix", "prefix_eta", "prefix_max_tokens", "exclude_outlier_tokens",
                           "seed", "weight_bits", "weight_group_size")}
        recipe["headroom"] = self.config.headroom          # resolved: "auto" means another value at another T
        if self.config.site_timesteps:
            recipe["site_headroom"] = {t: self.config.headroom_at(n) for t, n in self.config.site_timesteps.items()}
        blob = json.dumps({"model": path, "weights": weights, "recipe": recipe, "dtype": self.hparams.dtype,
                           "format": 3}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def cache_path(self) -> Path:
        return cache_dir() / "activations" / self.cache_key()

    def _load_cache(self) -> bool:
        entry = self.cache_path()
        if not (entry / "meta.json").is_file():
            return False
        meta = json.loads((entry / "meta.json").read_text())
        tensors = load_file(str(entry / "samples.safetensors"))
        taus = {name: tensors[f"tau.{name}"] for name in meta["site_names"]}
        self.calibration = Calibration(tensors["samples"], taus, meta["site_names"], meta["tokens"], 0.0,
                                       meta.get("prefix", []), meta.get("bos_token_id"), meta.get("prefix_search", {}),
                                       transforms=meta.get("transforms", {}),
                                       outlier_tokens_left_out=meta.get("outlier_tokens_left_out"),
                                       fanouts=meta.get("fanouts", {}), weights=meta.get("weights", {}))
        self.model_info = meta["model_info"]
        return True

    def _save_cache(self) -> None:
        entry = self.cache_path()
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(entry.name + f".tmp{os.getpid()}")
        tmp.mkdir(exist_ok=True)
        calib = self.calibration
        tensors = {"samples": calib.samples.contiguous(), **{f"tau.{k}": v for k, v in calib.taus.items()}}
        save_file(tensors, str(tmp / "samples.safetensors"))
        (tmp / "meta.json").write_text(json.dumps({"site_names": calib.site_names, "tokens": calib.tokens,
                                                   "model_info": self.model_info, "prefix": calib.prefix,
                                                   "bos_token_id": calib.bos_token_id,
                                                   "prefix_search": calib.prefix_search,
                                                   "transforms": calib.transforms,
                                                   "outlier_tokens_left_out": calib.outlier_tokens_left_out,
                                                   "fanouts": calib.fanouts, "weights": calib.weights}))
        if entry.exists():
            import shutil
            shutil.rmtree(entry)
        os.replace(tmp, entry)

    # ------------------------------------------------------------------ lightning
    def setup(self, stage: str | None = None) -> None:
        if self.calibration is not None:
            return
        if self.hparams.cache and self._load_cache():
            self.cache_hit = True
            return
        from spiking_lm_plugin.loading import load_base_model

        model, tokenizer, path = load_base_model(self.hparams.model, self.hparams.device, self.hparams.dtype,
                                                 self.hparams.device_map)
        self.calibration = calibrate(model, self.config, tokenizer=tokenizer, show_progress=False)
        self.model_info = {"base_model": self.hparams.model, "fingerprint": model.spiking.fingerprint,
                           "architecture": model.config.model_type, "num_layers": len(model.model.layers)}
        del model
        if self.hparams.cache:
            self._save_cache()

    @property
    def samples(self) -> torch.Tensor:
        assert self.calibration is not None, "call setup() first"
        return self.calibration.samples

    def train_dataloader(self) -> DataLoader:
        fit = self.config.fit
        return DataLoader(SampleBatches(self.samples, fit.batch_samples, fit.seed),
                          batch_size=None, num_workers=0)
