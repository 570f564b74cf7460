"""``convert(model, SpikingConfig(...))``: calibrate, fit all sites as one batched problem, rewrite in place."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from .calibration import record_activations, token_windows
from .config import SpikingConfig
from .fitting import FitResult, fit_neurons, search_allocations
from .fitting.reservoir import SiteReservoir
from .model_surgery import apply_rotation, attach, spiking_sites
from .neurons import NeuronBank, NeuronSpec
from .neurons.dynamics import phase_code
from .prefix import install_prefix, select_prefix
from .progress import progress_bar
from .sites import PER_CHANNEL_SITE_TYPES, site_type


@dataclass
class SpikingState:
    """What a converted model carries (and a checkpoint stores)."""

    config: SpikingConfig
    spec: NeuronSpec
    site_names: list[str]
    neurons: dict[str, torch.Tensor]          # NeuronBank.export(): [sites, T] tensors
    taus: dict[str, torch.Tensor]
    base_model: str
    fingerprint: str
    fit: dict = field(default_factory=dict)   # timings, losses, allocations
    prefix: list[int] = field(default_factory=list)   # the prefixed outlier tokens (resolved from the config)
    bos_token_id: int | None = None


def selected_sites(model: nn.Module, config: SpikingConfig) -> list[str]:
    return [name for name in spiking_sites(model) if site_type(name) in config.sites]


def normalized_samples(reservoirs: dict[str, SiteReservoir], config: SpikingConfig
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """[sites, N] magnitudes |x|/tau and the taus (per channel where the site feeds a linear layer).

    With tau headroom (``config.headroom > 1`` at ``config.headroom_sites``) the calibration maxima
    replace the last samples (at most N/8), so the fit also codes the largest values it has seen (now at
    1/headroom) and the code above them stays for the larger ones held-out text brings.
    """
    gen = torch.Generator().manual_seed(config.seed)
    rows, taus = [], {}
    n = config.samples_per_site
    for name, res in reservoirs.items():
        per_channel = config.tau == "channel" and site_type(name) in PER_CHANNEL_SITE_TYPES
        headroom = config.headroom if site_type(name) in config.headroom_sites else 1.0
        u, tau = res.normalized(per_channel, headroom)
        if u.numel() >= n:
            u = u[:n]
        else:
            u = u[torch.randint(0, u.numel(), (n,), generator=gen)]
        if config.headroom > 1.0:
            maxima = res.normalized_maxima(per_channel, headroom)
            if maxima.numel() > n // 8:
                maxima = maxima[torch.randperm(maxima.numel(), generator=gen)[: n // 8]]
            u = torch.cat([u[: n - maxima.numel()], maxima])
        rows.append(u)
        taus[name] = tau
    return torch.stack(rows), taus


def apply_neurons(model: nn.Module, state: SpikingState) -> None:
    """Install fitted neurons into the model's sites; sites not in the state stay analog."""
    sites = spiking_sites(model)
    missing = [n for n in state.site_names if n not in sites]
    if missing:
        raise ValueError(f"the model has no site(s) {missing[:5]}{'...' if len(missing) > 5 else ''}")
    t = state.neurons
    for i, name in enumerate(state.site_names):
        sites[name].set_neuron(t["d"][i], t["theta"][i], t["h"][i], t["v0"][i], state.taus[name],
                               levels=state.spec.levels, max_spikes=state.spec.max_spikes)
    current = getattr(model, "spiking_prefix", None)
    if (current.tokens if current is not None else []) != list(state.prefix):
        install_prefix(model, list(state.prefix), state.bos_token_id)
    model.spiking_state = state


def _spike_rate(bank: NeuronBank, samples: torch.Tensor) -> torch.Tensor:
    e = bank.export()
    cols = lambda p: [p[:, i : i + 1] for i in range(p.shape[1])]  # noqa: E731
    with torch.no_grad():
        _, events = phase_code(samples, cols(e["theta"]), cols(e["h"]), cols(e["d"]), e["v0"][:, None],
                               levels=bank.spec.levels, max_spikes=bank.spec.max_spikes)
    return events.mean(1) / bank.spec.timesteps


def fit_sites(samples: torch.Tensor, config: SpikingConfig, show_progress: bool = True) -> FitResult:
    """Alg. 2 (when ``allocation="search"``) then Alg. 1, all sites at once."""
    spec = config.neuron_spec()
    allocations = None
    if config.allocation == "search" and spec.fitted and spec.grains > 1:
        allocations = search_allocations(spec, samples, steps=config.search_steps, config=config.fit)
    fit = config.fit
    total = fit.rounds * (fit.threshold_steps + fit.base_steps) if spec.fitted else 0
    with progress_bar(f"fitting {samples.shape[0]} sites", total, show_progress and total > 0) as advance:
        return fit_neurons(spec, samples, fit, allocations,
                           progress=lambda i, n, phase, loss: advance(1, f"{phase} loss {loss:.3g}"))


#: the prefix search looks at this slice of the calibration windows (sinks show within a few hundred tokens)
PREFIX_SEARCH_WINDOWS = 4
PREFIX_SEARCH_LENGTH = 128


@dataclass
class Calibration:
    """Normalized samples of every selected site, ready for the batched fit."""

    samples: torch.Tensor                     # [sites, N], u = |x| / tau
    taus: dict[str, torch.Tensor]
    site_names: list[str]
    tokens: int
    seconds: float
    prefix: list[int] = field(default_factory=list)
    bos_token_id: int | None = None
    prefix_search: dict = field(default_factory=dict)
    windows: torch.Tensor | None = None       # the calibration token windows (layer-wise calibration reuses them)
    reservoirs: dict[str, SiteReservoir] | None = None   # the raw samples, to re-normalize for another recipe
    transforms: dict[str, str] = field(default_factory=dict)   # down_proj input size -> online transform used

    def for_config(self, config: SpikingConfig) -> "Calibration":
        """The same calibration normalized for ``config`` (another tau granularity or headroom, e.g. another T
        under ``tau_headroom="auto"``); the forward pass is not repeated."""
        if self.reservoirs is None:
            raise ValueError("this calibration kept no raw samples (loaded from a cache?); calibrate again")
        samples, taus = normalized_samples(self.reservoirs, config)
        return replace(self, samples=samples, taus=taus)


def calibrate(model: nn.Module, config: SpikingConfig, calibration=None, tokenizer=None,
              show_progress: bool = True) -> Calibration:
    """Attach the spiking wrappers (if needed) and sample every selected site over calibration text.

    calibration: a LongTensor of token windows [n, L], a list of strings, or None for the
    ``config.calibration_text`` asset's calibration split (needs ``tokenizer``).
    """
    t0 = time.perf_counter()
    attach(model)
    transforms = apply_rotation(model, config.rotation, config.seed, config.online_transform)
    names = selected_sites(model, config)
    if calibration is None or (isinstance(calibration, (list, tuple)) and calibration and isinstance(calibration[0], str)):
        if tokenizer is None:
            raise ValueError("a tokenizer is needed to calibrate on text")
        if calibration is None:
            from .assets import text_documents
            calibration = [d["text"] for d in text_documents(config.calibration_text, "calibration")]
        calibration = token_windows(tokenizer, calibration, config.calibration_tokens, config.sequence_length)
    if not isinstance(calibration, torch.Tensor) or calibration.ndim != 2:
        raise ValueError("calibration must be token windows [n, L], a list of texts, or None")
    bos = _bos_token_id(model, tokenizer)
    prefix, search = resolve_prefix(model, config, calibration, tokenizer, bos)
    install_prefix(model, prefix, bos)
    reservoirs = record_activations(model, calibration, names, config.samples_per_site, config.batch_size,
                                    config.seed, show_progress,
                                    config.prefix_eta if config.excludes_outliers else None)
    if config.excludes_outliers:
        search = {**search, "outlier_tokens_left_out": model.spiking_runtime.outlier_tokens}
    samples, taus = normalized_samples(reservoirs, config)
    return Calibration(samples, taus, names, int(calibration.numel()), time.perf_counter() - t0, prefix, bos,
                       search, calibration, reservoirs, transforms)


def _bos_token_id(model: nn.Module, tokenizer) -> int | None:
    bos = getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None
    return bos if bos is not None else getattr(model.config, "bos_token_id", None)


def resolve_prefix(model: nn.Module, config: SpikingConfig, windows: torch.Tensor, tokenizer,
                   bos: int | None) -> tuple[list[int], dict]:
    """The recipe's prefix tokens: explicit, none, or chosen on (a slice of) the calibration windows."""
    if isinstance(config.prefix, list):
        return list(config.prefix), {}
    if config.prefix == "none" or config.prefix_max_tokens == 0:
        return [], {}
    specials = [t for t in (bos, getattr(tokenizer, "eos_token_id", None) if tokenizer is not None
                            else getattr(model.config, "eos_token_id", None)) if isinstance(t, int)]
    t0 = time.perf_counter()
    search = select_prefix(model, windows[:PREFIX_SEARCH_WINDOWS, :PREFIX_SEARCH_LENGTH], config.prefix_eta,
                           config.prefix_max_tokens, specials, config.batch_size)
    return search.tokens, {"ratio_before": search.ratio_before, "ratio_after": search.ratio_after,
                           "outliers_per_sequence": search.outliers_per_sequence,
                           "seconds": time.perf_counter() - t0}


def build_state(config: SpikingConfig, calib: Calibration, result: FitResult, base_model: str, fingerprint: str,
                fit_seconds: float) -> SpikingState:
    """The converted model's description, with the fit's diagnostics (binary baseline included)."""
    from .fitting import evaluate

    binary = NeuronBank(NeuronSpec.preset("binary", config.timesteps), len(calib.site_names))
    return SpikingState(
        config=config, spec=result.bank.spec, site_names=calib.site_names, neurons=result.bank.export(),
        taus=dict(calib.taus), base_model=base_model, fingerprint=fingerprint,
        fit={
            "calibrate_s": calib.seconds,
            "fit_s": fit_seconds,
            "calibration_tokens": calib.tokens,
            "site_loss": result.loss.tolist(),
            "site_loss_binary": evaluate(binary, calib.samples, config.fit.relative).tolist(),
            "site_initial_loss": result.initial_loss.tolist(),
            "site_spike_rate": _spike_rate(result.bank, calib.samples).tolist(),
            "round_loss": result.round_loss,
            "allocations": [list(a) for a in result.bank.allocations],
            "prefix_search": calib.prefix_search,
            "online_transforms": dict(calib.transforms),
        },
        prefix=list(calib.prefix), bos_token_id=calib.bos_token_id,
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
    result = fit_sites(calib.samples, config, show_progress)
    state = build_state(config, calib, result, base_model or str(getattr(model.config, "_name_or_path", "")),
                        model.spiking_fingerprint, time.perf_counter() - t1)
    apply_neurons(model, state)
    if config.layerwise is not None:
        tune_layers(model, state, calib.windows, show_progress)
    model.spiking_runtime.set_mode(mode)
    return state


def tune_layers(model: nn.Module, state: SpikingState, windows: torch.Tensor, show_progress: bool = True) -> None:
    """Layer-wise calibration of an installed state (``state.config.layerwise``), recorded in ``state``."""
    from .layerwise import layerwise_calibrate, sync_state

    result = layerwise_calibrate(model, windows, state.config.layerwise, show_progress)
    sync_state(model, state)
    state.fit["layerwise"] = {"seconds": result.seconds, "block_mse_before": result.mse_before,
                              "block_mse_after": result.mse_after}


def set_mode(model: nn.Module, mode: str) -> None:
    """Switch a converted model between 'fused', 'timestep' and 'ann'."""
    runtime = getattr(model, "spiking_runtime", None)
    if runtime is None:
        raise ValueError("this model is not converted; call spiking_lm_plugin.convert or load first")
    runtime.set_mode(mode)
