"""``convert(model, SpikingConfig(...))`` and its stages (docs/DESIGN.md, "Pipeline"):

    prepare (wrap, rotate) -> calibrate (prefix, samples) -> fit (all sites, one batched problem)
    -> install (neurons into the sites) -> save

``convert`` is their composition; each stage is public so one can be swapped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .calibration.fanout import fanout_weights
from .calibration.stage import Calibration, calibrate
from .config import SpikingConfig
from .fitting import FitResult, fit_neurons, search_allocations
from .fitting.grouped import GroupedFit, site_steps, timestep_groups
from .model_surgery import prepare, selected_sites, spiking_sites
from .neurons import NeuronBank, NeuronSpec
from .prefix import install_prefix
from .progress import progress_bar
from .runtime import runtime_of
from .sites import MASK_EXEMPT_SITE_TYPES, site_type

__all__ = ["Calibration", "SpikingState", "build_state", "calibrate", "convert", "correct_biases", "fit", "install",
           "prepare", "selected_sites", "set_mode"]


@dataclass
class SpikingState:
    """What a converted model carries (and a checkpoint stores)."""

    config: SpikingConfig
    spec: NeuronSpec
    site_names: list[str]
    neurons: dict[str, torch.Tensor]          # NeuronBank.export(): [sites, T] tensors (+ "timesteps" when T varies)
    taus: dict[str, torch.Tensor]
    base_model: str
    fingerprint: str
    fit: dict = field(default_factory=dict)   # timings, losses, allocations
    prefix: list[int] = field(default_factory=list)   # the prefixed outlier tokens (resolved from the config)
    bos_token_id: int | None = None
    weights: dict = field(default_factory=dict)   # the weight recipe's record (library, version, fingerprint)
    offsets: dict[str, torch.Tensor] = field(default_factory=dict)   # bias correction: mean coding error per site


def install(model: nn.Module, state: SpikingState) -> None:
    """Install fitted neurons into the model's sites (sites not in the state stay analog) and the
    state's prefix; the state becomes ``model.spiking.state``."""
    sites = spiking_sites(model)
    missing = [n for n in state.site_names if n not in sites]
    if missing:
        raise ValueError(f"the model has no site(s) {missing[:5]}{'...' if len(missing) > 5 else ''}")
    t = state.neurons
    for i, name in enumerate(state.site_names):
        steps = site_steps(t, i)
        sites[name].set_neuron(t["d"][i, :steps], t["theta"][i, :steps], t["h"][i, :steps], t["v0"][i],
                               state.taus[name], levels=state.spec.levels, max_spikes=state.spec.max_spikes)
        sites[name].set_offset(state.offsets.get(name))
    runtime = runtime_of(model)
    runtime.spike_mask = state.config.spike_mask
    runtime.mass_correction = state.config.mass_correction
    if (runtime.prefix.tokens if runtime.prefix is not None else []) != list(state.prefix):
        install_prefix(model, list(state.prefix), state.bos_token_id)
    runtime.state = state


def fit_spike_caps(config: SpikingConfig, site_names: list[str]) -> torch.Tensor | None:
    """Per-site spike budgets of a fit with the early-spike mask inside the dynamics (``mask_in_fit``):
    k at every masked site, +inf at the exempt ones; None for the paper's post-hoc mask."""
    if config.spike_mask is None or not config.mask_in_fit:
        return None
    return torch.tensor([float("inf") if site_type(n) in MASK_EXEMPT_SITE_TYPES else float(config.spike_mask)
                         for n in site_names])


def fit(samples: torch.Tensor, config: SpikingConfig, show_progress: bool = True,
        site_names: list[str] | None = None, fanouts: dict[str, float] | None = None) -> FitResult | GroupedFit:
    """The fit stage: Alg. 2 (when ``allocation="search"``) then the neuron family's fitter, all sites at
    once (with ``site_timesteps``: all sites of each T at once, a :class:`GroupedFit`). ``site_names`` (the
    calibration's) are needed when the recipe fits with the mask inside or T varies per site;
    ``fanouts`` (``Calibration.fanouts``) weight the spike penalty per site."""
    if (config.mask_in_fit and config.spike_mask is not None or config.mixed_timesteps) and site_names is None:
        raise ValueError("fitting with the early-spike mask inside (mask_in_fit) or with site_timesteps needs "
                         "the site names")
    names = site_names or []
    caps = fit_spike_caps(config, names)
    weights = fanout_weights(fanouts or {}, names)
    groups = timestep_groups([config.timesteps_of(n) for n in names]) if config.mixed_timesteps \
        else {config.timesteps: list(range(samples.shape[0]))}
    specs = {t: config.neuron_spec(t) for t in groups}
    total = sum(config.fit.total_steps for t in groups if specs[t].fitted)
    results = []
    with progress_bar(f"fitting {samples.shape[0]} sites", total, show_progress and total > 0) as advance:
        for t, idx in groups.items():
            every = len(idx) == samples.shape[0]
            part = samples if every else samples[idx]
            allocations = searched_allocations(config, part, specs[t])
            results.append((idx, fit_neurons(
                specs[t], part, config.fit, allocations,
                progress=lambda i, n, phase, loss, t=t: advance(1, f"T={t} {phase} loss {loss:.3g}"),
                spike_caps=caps if caps is None or every else caps[idx],
                site_weights=weights if weights is None or every else weights[idx])))
    if not config.mixed_timesteps:
        return results[0][1]
    return GroupedFit(results, samples.shape[0])


def searched_allocations(config: SpikingConfig, samples: torch.Tensor,
                         spec: NeuronSpec | None = None) -> list[tuple[int, ...]] | None:
    """Alg. 2's allocation per site when the recipe asks for the search (and it has a choice), else None."""
    spec = spec or config.neuron_spec()
    if config.allocation == "search" and spec.fitted and spec.grains > 1:
        return search_allocations(spec, samples, steps=config.search_steps, config=config.fit)
    return None


def build_state(config: SpikingConfig, calib: Calibration, result: FitResult, base_model: str, fingerprint: str,
                fit_seconds: float) -> SpikingState:
    """The converted model's description, with the fit's diagnostics (binary baseline included)."""
    from .fitting import evaluate

    grouped = result if isinstance(result, GroupedFit) else GroupedFit([(list(range(len(calib.site_names))), result)],
                                                                       len(calib.site_names))
    binary_loss = torch.empty(len(calib.site_names))
    for idx, part in grouped.groups:        # the binary baseline at each site's own T
        binary = NeuronBank(NeuronSpec.preset("binary", part.bank.spec.timesteps), len(idx))
        binary_loss[idx] = evaluate(binary, calib.samples[idx], config.fit.relative)
    neurons = grouped.export() if isinstance(result, GroupedFit) else result.bank.export()
    return SpikingState(
        config=config, spec=grouped.spec, site_names=calib.site_names, neurons=neurons,
        taus=dict(calib.taus), base_model=base_model, fingerprint=fingerprint,
        fit={
            "calibrate_s": calib.seconds,
            "fit_s": fit_seconds,
            "calibration_tokens": calib.tokens,
            "site_loss": grouped.loss.tolist(),
            "site_loss_binary": binary_loss.tolist(),
            "site_initial_loss": grouped.initial_loss.tolist(),
            "site_spike_rate": grouped.spike_rate(calib.samples).tolist(),
            "round_loss": grouped.round_loss,
            "allocations": [list(a) for a in grouped.allocations],
            "prefix_search": calib.prefix_search,
            "outlier_tokens_left_out": calib.outlier_tokens_left_out,
            "online_transforms": dict(calib.transforms),
        },
        prefix=list(calib.prefix), bos_token_id=calib.bos_token_id, weights=dict(calib.weights),
    )


def convert(model: nn.Module, config: SpikingConfig | None = None, calibration=None, tokenizer=None,
            base_model: str | None = None, show_progress: bool = True, mode: str = "fused") -> SpikingState:
    """Convert ``model`` in place into a spiking model (calibrate, fit all sites at once, install).

    calibration: token windows [n, L], a list of texts, or None for the calibration split of
    ``config.calibration_text`` (then ``tokenizer`` is needed).
    """
    config = config or SpikingConfig()
    calib = calibrate(model, config, calibration, tokenizer, show_progress)
    t1 = time.perf_counter()
    result = fit(calib.samples, config, show_progress, calib.site_names, calib.fanouts)
    state = build_state(config, calib, result, base_model or str(getattr(model.config, "_name_or_path", "")),
                        runtime_of(model).fingerprint, time.perf_counter() - t1)
    install(model, state)
    if config.layerwise is not None:
        tune_layers(model, state, calib.windows, show_progress)
    if config.bias_correction:
        correct_biases(model, state, calib.windows)
    runtime_of(model).set_mode(mode)
    return state


def correct_biases(model: nn.Module, state: SpikingState, windows: torch.Tensor) -> None:
    """The bias-correction stage of an installed state (``state.config.bias_correction``): the offsets go
    into ``state`` (so a checkpoint stores them) and stay installed."""
    from .bias_correction import measure_offsets

    t0 = time.perf_counter()
    state.offsets = measure_offsets(model, windows, state.site_names)
    state.fit["bias_correction"] = {"seconds": time.perf_counter() - t0, "sites": len(state.offsets)}


def tune_layers(model: nn.Module, state: SpikingState, windows: torch.Tensor, show_progress: bool = True) -> None:
    """Layer-wise calibration of an installed state (``state.config.layerwise``): the tuned tau and
    thresholds go into ``state`` and are installed from there (the state stays the one truth)."""
    from .layerwise import layerwise_calibrate

    result = layerwise_calibrate(model, windows, state.config.layerwise, show_progress)
    theta = state.neurons["theta"].clone()
    for i, name in enumerate(state.site_names):
        if name in result.thetas:
            theta[i, : site_steps(state.neurons, i)] = result.thetas[name].to(theta.dtype)
            state.taus[name] = result.taus[name].reshape(state.taus[name].shape).clone()
    state.neurons = {**state.neurons, "theta": theta}
    state.fit["layerwise"] = {"seconds": result.seconds, "block_mse_before": result.mse_before,
                              "block_mse_after": result.mse_after, "blocks_kept": result.blocks_kept,
                              "holdout_block_mse_before": result.holdout_mse_before,
                              "holdout_block_mse_after": result.holdout_mse_after,
                              "guard_nll_before": result.guard_nll_before,
                              "guard_nll_after": result.guard_nll_after, "accepted": result.accepted}
    install(model, state)


def set_mode(model: nn.Module, mode: str) -> None:
    """Switch a converted model between 'fused', 'timestep', 'analog' and 'ann' (runtime.MODES)."""
    runtime_of(model).set_mode(mode)
