"""Converted checkpoint: a directory with ``spiking_config.json`` + ``neurons.safetensors``.

The base weights are not stored: the checkpoint names the base model and a fingerprint of its weights,
so a 7B conversion stays kilobytes to megabytes. Written atomically (temp dir + rename); loading checks
the format version, the fingerprint and the site coverage and says exactly what is wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .checkpoint_files import (CONFIG_FILE, FORMAT, FORMAT_VERSION, TENSORS_FILE, CheckpointError, OutputPathError,
                               file_digest, read_meta, verify_tensors, write_directory)
from .config import SpikingConfig
from .conversion import SpikingState, install
from .fitting.grouped import site_steps
from .model_surgery import attach, prepare, selected_sites
from .neurons import NeuronSpec
from .sites import LINEAR_INPUT_SITE_TYPES, site_type
from .weight_recipe import WeightRecipe, describe_weights

__all__ = ["CONFIG_FILE", "FORMAT", "FORMAT_VERSION", "TENSORS_FILE", "CheckpointError", "OutputPathError", "load",
           "read_meta", "save", "verify_tensors", "write_checkpoint"]


def save(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write the converted model's neurons (not its base weights) as a checkpoint directory; an existing
    checkpoint there is replaced atomically, any other file in it kept."""
    runtime = getattr(model, "spiking", None)
    state: SpikingState | None = getattr(runtime, "state", None)
    if state is None:
        raise ValueError("this model has no fitted neurons to save; run spiking_lm_plugin.convert first")
    return write_checkpoint(directory, state, model.config.model_type, len(model.model.layers))


def write_checkpoint(directory: str | os.PathLike, state: SpikingState, architecture: str, num_layers: int) -> Path:
    """Atomically write ``state`` (no model needed: the trainer exports from cached activations)."""
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "base_model": {"name": state.base_model, "fingerprint": state.fingerprint,
                       "architecture": architecture, "num_layers": num_layers},
        "config": state.config.to_dict(),
        "neuron": state.spec.to_dict(),
        "sites": state.site_names,
        "fit": state.fit,
        "prefix": {"tokens": list(state.prefix), "bos_token_id": state.bos_token_id},
        "weights": dict(state.weights),
    }
    tensors = {f"neurons.{k}": v.contiguous().cpu() for k, v in state.neurons.items()}
    tensors.update({f"tau.{name}": tau.contiguous().cpu() for name, tau in state.taus.items()})
    tensors.update({f"offset.{name}": offset.contiguous().cpu() for name, offset in state.offsets.items()})

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / TENSORS_FILE))
        meta["tensors"] = file_digest(tmp / TENSORS_FILE)     # lets `info` and `load` tell a whole file
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=1))

    return write_directory(directory, write)


def check_weights(directory: Path, recorded: dict, applied: dict) -> None:
    """Refuse quantized weights other than the ones the neurons were fitted on (the recipe re-applied by
    another library version, or a model quantized another way)."""
    if recorded.get("fingerprint") == applied.get("fingerprint"):
        return
    if not recorded or not applied:
        raise CheckpointError(f"checkpoint {directory} was fitted on "
                              f"{describe_weights(WeightRecipe.from_record(recorded))}, but the model has "
                              f"{describe_weights(WeightRecipe.from_record(applied))}: load the base model unquantized")
    raise CheckpointError(
        f"checkpoint {directory} was fitted on W{recorded['bits']} weights quantized by {recorded['library']} "
        f"{recorded['version']} (fingerprint {recorded['fingerprint'][:12]}), but {applied['library']} "
        f"{applied['version']} quantizes this base model to other weights (fingerprint "
        f"{applied['fingerprint'][:12]}): install {recorded['library']}=={recorded['version']}")


def load(model: nn.Module, directory: str | os.PathLike, mode: str = "fused") -> SpikingState:
    """Attach spiking wrappers to ``model`` (the base model) and install the checkpoint's neurons."""
    directory = Path(directory)
    meta = read_meta(directory)
    verify_tensors(directory, meta)
    runtime = attach(model)
    base = meta["base_model"]
    if base["fingerprint"] != runtime.fingerprint:
        raise CheckpointError(
            f"checkpoint {directory} was made for base model {base['name']!r} (weights fingerprint "
            f"{base['fingerprint'][:12]}), but the loaded model's weights fingerprint is "
            f"{runtime.fingerprint[:12]}: load the same base model it was converted from")
    config = SpikingConfig.from_dict(meta["config"])
    # re-derived from base + recipe, never stored; a transform other than the one the neurons were fitted
    # behind (another spiking-lm choosing another construction) would change every down_proj input
    used = prepare(model, config)
    recorded = meta.get("fit", {}).get("online_transforms")
    if recorded and recorded != used:
        raise CheckpointError(f"checkpoint {directory} was fitted behind the online transforms {recorded}, but "
                              f"this spiking-lm builds {used}; use the spiking-lm version that wrote it")
    check_weights(directory, meta.get("weights", {}), runtime.weights)
    expected = selected_sites(model, config)
    stored = list(meta["sites"])
    if stored != expected:
        missing = sorted(set(expected) - set(stored))
        extra = sorted(set(stored) - set(expected))
        raise CheckpointError(f"checkpoint {directory} does not cover this model's sites: missing {missing[:6]}"
                              f"{'...' if len(missing) > 6 else ''}, unexpected {extra[:6]}")
    try:
        tensors = load_file(str(directory / TENSORS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{directory / TENSORS_FILE} is missing or corrupt: {exc}") from exc
    neurons = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("neurons.")}
    taus = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("tau.")}
    offsets = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("offset.")}
    unlisted = sorted(set(offsets) - set(stored))
    if unlisted:
        raise CheckpointError(f"{directory / TENSORS_FILE} has bias offsets for sites it does not list: {unlisted[:6]}")
    if config.bias_correction and not offsets and any(site_type(n) in LINEAR_INPUT_SITE_TYPES for n in stored):
        raise CheckpointError(f"{directory / TENSORS_FILE} has no bias offsets, but its recipe in {CONFIG_FILE} "
                              "is bias-corrected")
    lacking = [n for n in stored if n not in taus] + [k for k in ("d", "theta", "h", "v0") if k not in neurons]
    if lacking:
        raise CheckpointError(f"{directory / TENSORS_FILE} is incomplete: no tensors for {lacking[:6]}")
    if neurons["d"].shape[0] != len(stored):
        raise CheckpointError(f"{directory / TENSORS_FILE} has {neurons['d'].shape[0]} neurons "
                              f"for {len(stored)} sites")
    steps = [site_steps(neurons, i) for i in range(len(stored))]
    wanted = [config.timesteps_of(n) for n in stored]
    if steps != wanted:
        bad = next(i for i, (a, b) in enumerate(zip(steps, wanted)) if a != b)
        raise CheckpointError(f"{directory / TENSORS_FILE}: site {stored[bad]} has {steps[bad]} steps but the "
                              f"recipe in {CONFIG_FILE} gives it T={wanted[bad]}")
    prefix = meta.get("prefix", {})
    tokens = prefix.get("tokens", [])
    vocab = model.get_input_embeddings().num_embeddings
    if any(not isinstance(t, int) or not 0 <= t < vocab for t in tokens):
        raise CheckpointError(f"checkpoint {directory}: prefix tokens {tokens} are not ids of this model's "
                              f"vocabulary ({vocab} tokens)")
    state = SpikingState(config, NeuronSpec.from_dict(meta["neuron"]), stored, neurons, taus,
                         base["name"], base["fingerprint"], meta.get("fit", {}), tokens, prefix.get("bos_token_id"),
                         dict(meta.get("weights", {})), offsets)
    try:
        install(model, state)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {directory} does not fit this model: {exc}") from exc
    runtime.set_mode(mode)
    return state
