"""Layer-wise calibration (optional stage after the per-site fit, as in the dual-conversion paper).

The per-site fit minimizes each neuron's own coding error (eq. 9); what matters is the error the network
makes. Here each decoder block in turn adjusts its neurons so that the spiking block, fed the spiking
model's own hidden states, reproduces the ANN block's output; weights stay frozen and one block's
activations are in memory at a time. Per site (network order, coordinate descent) it tries a few scales of
tau (the clipping point) and shifts of all thresholds theta_t by a fraction of their step weight (the
rounding offset), keeping whichever lowers the block's output error measured with the exact spiking
forward. Windows held out from the tuning decide whether each block's change is kept, and further windows
that no decision saw whether the stage is.
(A surrogate-gradient version was tried first: through the reset chain the surrogate Jacobian alternates
in sign, and even a straight-through estimator raised the block error on every model tried.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .hf_compat import CACHE_KWARGS, cache_of, with_cache
from .layerwise_config import LayerwiseConfig
from .model_surgery import spiking_sites
from .prefix import prefixed_inputs
from .progress import progress_bar
from .runtime import runtime_of


@dataclass
class LayerwiseResult:
    mse_before: list[float] = field(default_factory=list)   # per block, relative to the block's own update
    mse_after: list[float] = field(default_factory=list)
    holdout_mse_before: list[float] = field(default_factory=list)   # the same errors on the held-out windows
    holdout_mse_after: list[float] = field(default_factory=list)
    blocks_kept: list[bool] = field(default_factory=list)           # the block's change lowered held-out error
    guard_nll_before: float = float("nan")                          # model loss on the guard windows
    guard_nll_after: float = float("nan")
    accepted: bool = True                                           # False: the whole stage was undone
    seconds: float = 0.0
    taus: dict[str, torch.Tensor] = field(default_factory=dict)      # site -> tuned tau (kept changes only)
    thetas: dict[str, torch.Tensor] = field(default_factory=dict)    # site -> tuned thresholds [T]


def _output(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def _ann_trace(model: nn.Module, windows: torch.Tensor, batch: int):
    """Per batch: the inputs of block 0, every block's ANN output, and the kwargs each block was called with
    (masks and rotary embeddings, computed by the model itself so every architecture's variant is right)."""
    layers = model.model.layers
    captured: dict[int, tuple] = {}
    hooks = []
    for i, layer in enumerate(layers):
        def pre(m, args, kwargs, i=i):
            captured[i] = (args[0] if args else kwargs["hidden_states"],
                           {k: v for k, v in kwargs.items() if k != "hidden_states" and k not in CACHE_KWARGS})
        def post(m, args, kwargs, out, i=i):
            captured[i] = captured[i] + (_output(out),)
        hooks += [layer.register_forward_pre_hook(pre, with_kwargs=True),
                  layer.register_forward_hook(post, with_kwargs=True)]
    device = next(model.parameters()).device
    traces = []
    try:
        with runtime_of(model).use(mode="analog", meter=None):
            for chunk in windows.split(batch):
                captured.clear()
                model.model(**prefixed_inputs(model, chunk.to(device)))
                traces.append({"x0": captured[0][0], "kwargs": [captured[i][1] for i in range(len(layers))],
                               "targets": [captured[i][2] for i in range(len(layers))], "ids": chunk})
    finally:
        for h in hooks:
            h.remove()
    return traces


def _run_block(model: nn.Module, layer: nn.Module, x: torch.Tensor, trace: dict, index: int) -> torch.Tensor:
    cache = cache_of(prefixed_inputs(model, trace["ids"].to(x.device)))
    return _output(layer(x, **with_cache(trace["kwargs"][index], cache)))


def split_windows(windows: torch.Tensor, config: LayerwiseConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tuning, held-out, guard windows), disjoint: the first ``config.windows`` and the last
    ``config.holdout_windows`` calibration windows cut to ``config.length`` tokens, and the
    ``config.guard_windows`` before the held-out ones at their full length (the length the model is
    evaluated at, where a tuning on short windows can hurt later positions)."""
    needed = config.windows + config.holdout_windows + config.guard_windows
    if windows.shape[0] < needed:
        raise ValueError(f"layer-wise calibration needs {needed} calibration windows ({config.windows} to tune on, "
                         f"{config.holdout_windows} held out, {config.guard_windows} to guard the stage), "
                         f"got {windows.shape[0]}")
    held = windows.shape[0] - config.holdout_windows
    return (windows[: config.windows, : config.length], windows[held:, : config.length],
            windows[held - config.guard_windows: held])


@torch.no_grad()
def mean_token_nll(model: nn.Module, windows: torch.Tensor, batch: int = 4) -> float:
    """Mean next-token negative log-likelihood of the model (its current mode) over ``windows`` [n, L]:
    every window predicts its own tokens 2..L."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for chunk in windows.split(batch):
        chunk = chunk.to(device)
        logits = model(chunk).logits[:, :-1].float()
        total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                         chunk[:, 1:].reshape(-1), reduction="sum"))
        count += chunk[:, 1:].numel()
    return total / count


def _block_error(model: nn.Module, layer: nn.Module, index: int, traces: list[dict], inputs: list) -> float:
    """The block's output error against the ANN block, relative to the ANN block's own update."""
    total = 0.0
    for trace, x in zip(traces, inputs):
        out = _run_block(model, layer, x, trace, index).float()
        target = trace["targets"][index].float()
        ann_input = trace["x0"] if index == 0 else trace["targets"][index - 1]
        own = ((target - ann_input.float()) ** 2).mean().clamp_min(1e-12)
        total += float(((out - target) ** 2).mean() / own)
    return total / len(traces)


def _tune_site(site, config: LayerwiseConfig, error, best: float) -> float:
    """Coordinate descent on one site: the best tau scale, then the best threshold shift; returns the error."""
    tau, theta = site.tau, site.theta
    for scale in config.tau_scales:
        site.tau = tau * scale
        candidate = error()
        if candidate < best:
            best, tau = candidate, site.tau
    site.tau = tau
    for shift in config.threshold_shifts:
        site.theta = (theta + shift * site.d).clamp_min(1e-6)
        candidate = error()
        if candidate < best:
            best, theta = candidate, site.theta
    site.theta = theta
    return best


@torch.no_grad()
def layerwise_calibrate(model: nn.Module, windows: torch.Tensor, config: LayerwiseConfig | None = None,
                        show_progress: bool = True) -> LayerwiseResult:
    """Tune every block's sites in turn (fused execution, weights frozen); returns per-block errors and
    the tuned ``tau``/``theta`` of the sites whose change was kept (``conversion.tune_layers`` installs
    them through the state).

    Two guards keep the stage from overfitting its few tuning windows (docs/DESIGN.md, "Layer-wise
    calibration"): a block's change is kept only if it also lowers that block's error on the held-out
    windows, and the whole stage is undone unless it lowers the model's loss by ``config.min_gain`` on the
    guard windows, which neither the tuning nor those decisions saw. So on the guard windows the stage
    never makes the model worse than the per-site fit alone.
    """
    config = config or LayerwiseConfig()
    t0 = time.perf_counter()
    tune_windows, holdout, guard = split_windows(windows, config)
    runtime = runtime_of(model)
    tune = _ann_trace(model, tune_windows, batch=max(1, min(4, tune_windows.shape[0])))
    held = _ann_trace(model, holdout, batch=max(1, min(4, holdout.shape[0])))
    layers = model.model.layers
    sites = spiking_sites(model)
    fitted = {name: (site.tau, site.theta) for name, site in sites.items() if site.ready}
    result = LayerwiseResult()
    tune_inputs, held_inputs = [t["x0"] for t in tune], [t["x0"] for t in held]
    with runtime.use(mode="fused", meter=None):
        result.guard_nll_before = mean_token_nll(model, guard)
        with progress_bar("layer-wise calibration", len(layers), show_progress) as advance:
            for i, layer in enumerate(layers):
                block = [s for n, s in sites.items() if n.startswith(f"layers.{i}.") and s.ready]
                before = best = _block_error(model, layer, i, tune, tune_inputs)
                held_before = _block_error(model, layer, i, held, held_inputs)
                for site in block:
                    best = _tune_site(site, config, lambda: _block_error(model, layer, i, tune, tune_inputs), best)
                held_after = _block_error(model, layer, i, held, held_inputs)
                kept = held_after < held_before
                for site in block:
                    if kept:
                        result.taus[site.name], result.thetas[site.name] = (site.tau.detach().cpu(),
                                                                            site.theta.detach().cpu())
                    else:
                        site.tau, site.theta = fitted[site.name]
                tune_inputs = [_run_block(model, layer, x, t, i) for x, t in zip(tune_inputs, tune)]
                held_inputs = [_run_block(model, layer, x, t, i) for x, t in zip(held_inputs, held)]
                result.mse_before.append(before)
                result.mse_after.append(best if kept else before)
                result.holdout_mse_before.append(held_before)
                result.holdout_mse_after.append(held_after if kept else held_before)
                result.blocks_kept.append(kept)
                advance(1, f"block {i}: {before:.3g} -> {best:.3g} ({'kept' if kept else 'undone'})")
        result.guard_nll_after = result.guard_nll_before
        if result.taus:
            result.guard_nll_after = mean_token_nll(model, guard)
            if result.guard_nll_after > result.guard_nll_before - config.min_gain:
                for name, (tau, theta) in fitted.items():
                    sites[name].tau, sites[name].theta = tau, theta
                result.taus, result.thetas, result.accepted = {}, {}, False
    result.seconds = time.perf_counter() - t0
    return result
