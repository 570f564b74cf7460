"""Speed of SmolLM2-135M conversion and execution: wall time split (load / calibrate / fit / save),
fitting throughput, forward time ANN vs fused vs timestep (ratios in one run), peak memory.
    python bench/speed.py [--device cpu]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.loading import load_base_model

from _common import eval_windows, timed, write


def forward_time(model, windows, repeats: int = 2) -> float:
    with torch.no_grad():
        model(windows[:1])       # warm-up (compiles the site kernels once)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(windows)
    if windows.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calibration-tokens", type=int, default=16384)
    parser.add_argument("--tokens", type=int, default=2048)
    args = parser.parse_args()
    (model, tokenizer, _), load_s = timed(load_base_model, "smollm2-135m", args.device)
    config = slm.SpikingConfig(calibration_tokens=args.calibration_tokens, rotation="online")
    state = slm.convert(model, config, tokenizer=tokenizer, show_progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        _, save_s = timed(slm.save, model, tmp)
    fit = config.fit
    steps = fit.total_steps
    sites = len(state.site_names)
    windows = eval_windows(tokenizer, args.tokens).to(args.device)
    times = {}
    for mode in ("ann", "fused", "timestep"):
        slm.set_mode(model, mode)
        timestep = mode == "timestep"
        times[mode] = forward_time(model, windows[:1] if timestep else windows, 1 if timestep else 2)
    times["timestep"] *= windows.shape[0]     # timestep ran one window: scale to the same tokens
    rows = [
        {"quantity": "load (s)", "value": load_s},
        {"quantity": "calibrate (s)", "value": state.fit["calibrate_s"]},
        {"quantity": "fit (s)", "value": state.fit["fit_s"]},
        {"quantity": "save (s)", "value": save_s},
        {"quantity": "conversion = calibrate + fit (s)", "value": state.fit["calibrate_s"] + state.fit["fit_s"]},
        {"quantity": "fit throughput (site-sample-steps / s)",
         "value": sites * fit.batch_samples * steps / state.fit["fit_s"]},
        {"quantity": f"ANN forward, {windows.numel()} tokens (s)", "value": times["ann"]},
        {"quantity": "fused / ANN forward time", "value": times["fused"] / times["ann"]},
        {"quantity": "timestep / fused forward time", "value": times["timestep"] / times["fused"]},
        {"quantity": "peak RSS (GB)", "value": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6},
    ]
    write("speed", rows, {"device": args.device, "sites": sites, "fit_steps": steps,
                          "calibration_tokens": state.fit["calibration_tokens"]})


if __name__ == "__main__":
    main()
