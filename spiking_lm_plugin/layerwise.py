"""Layer-wise calibration (optional stage after the per-site fit, as in the dual-conversion paper).

The per-site fit minimizes each neuron's own coding error (eq. 9); what matters is the error the network
makes. Here each decoder block in turn adjusts its neurons so that the spiking block, fed the spiking
model's own hidden states, reproduces the ANN block's output; weights stay frozen and one block's
activations are in memory at a time. Per site (network order, coordinate descent) it tries a few scales of
tau (the clipping point) and shifts of all thresholds theta_t by a fraction of their step weight (the
rounding offset), keeping whichever lowers the block's output error measured with the exact spiking
forward. (A surrogate-gradient version was tried first: through the reset chain the surrogate Jacobian
alternates in sign, and even a straight-through estimator raised the block error on every model tried.)
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
    seconds: float = 0.0
    taus: dict[str, torch.Tensor] = field(default_factory=dict)      # site -> tuned tau
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


@torch.no_grad()
def layerwise_calibrate(model: nn.Module, windows: torch.Tensor, config: LayerwiseConfig | None = None,
                        show_progress: bool = True) -> LayerwiseResult:
    """Tune every block's sites in turn (fused execution, weights frozen); returns per-block errors and
    the tuned ``tau``/``theta`` per site (``conversion.tune_layers`` installs them through the state)."""
    config = config or LayerwiseConfig()
    t0 = time.perf_counter()
    windows = windows[: config.windows, : config.length]
    runtime = runtime_of(model)
    traces = _ann_trace(model, windows, batch=max(1, min(4, windows.shape[0])))
    layers = model.model.layers
    sites = spiking_sites(model)
    result = LayerwiseResult()
    inputs = [t["x0"] for t in traces]
    with runtime.use(mode="fused", meter=None):
        with progress_bar("layer-wise calibration", len(layers), show_progress) as advance:
            for i, layer in enumerate(layers):
                def block_error() -> float:
                    total = 0.0
                    for j, trace in enumerate(traces):
                        out = _run_block(model, layer, inputs[j], trace, i).float()
                        target = trace["targets"][i].float()
                        ann_input = trace["x0"] if i == 0 else trace["targets"][i - 1]
                        own = ((target - ann_input.float()) ** 2).mean().clamp_min(1e-12)
                        total += float(((out - target) ** 2).mean() / own)
                    return total / len(traces)

                before = best = block_error()
                for site in (s for n, s in sites.items() if n.startswith(f"layers.{i}.") and s.ready):
                    tau, theta = site.tau, site.theta
                    for scale in config.tau_scales:
                        site.tau = tau * scale
                        error = block_error()
                        if error < best:
                            best, tau = error, site.tau
                    site.tau = tau
                    for shift in config.threshold_shifts:
                        site.theta = (theta + shift * site.d).clamp_min(1e-6)
                        error = block_error()
                        if error < best:
                            best, theta = error, site.theta
                    site.theta = theta
                    result.taus[site.name], result.thetas[site.name] = tau.detach().cpu(), theta.detach().cpu()
                inputs = [_run_block(model, layer, inputs[j], traces[j], i) for j in range(len(traces))]
                result.mse_before.append(before)
                result.mse_after.append(best)
                advance(1, f"block {i}: {before:.3g} -> {best:.3g}")
    result.seconds = time.perf_counter() - t0
    return result
