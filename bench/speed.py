"""Speed of SmolLM2-135M conversion and execution, as ratios measured in one run: the conversion against
one plain ANN forward over the same number of calibration tokens (the unconverted model, timed just before and
just after the conversion, since this machine's speed drifts; the converted model's ``ann`` mode beside it); fused and timestep forwards (energy
meter off and on) against the ANN at T = 6, 8, 10; how far the fp32 timestep logits are from the fused.
    python bench/speed.py [--device cpu] [--calibration-tokens 16384] [--tokens 2048] [--conversion-only]
``--conversion-only`` measures the conversion rows alone (written as ``speed_conversion``).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.loading import load_base_model

from _common import eval_windows, interleaved_medians, sync, timed, write


@torch.no_grad()
def batched_forward_time(model, windows, batch: int, device: str) -> float:
    """One forward (logits included) over ``windows`` in calibration-sized batches, after a short warm-up."""
    model(windows[:1, :64])
    t0 = time.perf_counter()
    for chunk in windows.split(batch):
        model(chunk)
    sync(device)
    return time.perf_counter() - t0


def plain_forward_time(model, tokenizer, tokens: int, batch: int, device: str) -> float:
    """The converted model's ``ann`` mode over ``tokens`` held-out tokens."""
    with model.spiking.use(mode="ann", meter=None):
        return batched_forward_time(model, eval_windows(tokenizer, tokens).to(device), batch, device)


@torch.no_grad()
def timestep_agreement(model, window) -> dict[str, float]:
    """fp32: the timestep logits against the fused ones on one window (relative norm, top-1 agreement)."""
    with model.spiking.use(mode="fused", meter=None):
        fused = model(window).logits.float()
    with model.spiking.use(mode="timestep", meter=None):
        stepped = model(window).logits.float()
    return {"rel": float((stepped - fused).norm() / fused.norm()),
            "top1": float((stepped.argmax(-1) == fused.argmax(-1)).float().mean())}


def ratios(model, windows, timesteps: int, label: str, rounds: int = 3) -> list[dict]:
    """Forward times against the ANN on the same tokens, interleaved medians (the timestep mode runs one
    window, against the ANN on that window)."""
    one = windows[:1]
    t = interleaved_medians(model, {"ann": (windows, "ann", False), "fused": (windows, "fused", False),
                                    "fused metered": (windows, "fused", True), "ann one": (one, "ann", False),
                                    "timestep": (one, "timestep", False),
                                    "timestep metered": (one, "timestep", True)}, rounds)
    name = f"T = {timesteps}{label}"
    return [{"quantity": f"{name}: fused / ANN forward", "value": t["fused"] / t["ann"]},
            {"quantity": f"{name}: fused metered / ANN forward", "value": t["fused metered"] / t["ann"]},
            {"quantity": f"{name}: timestep / ANN forward (target <= T)", "value": t["timestep"] / t["ann one"]},
            {"quantity": f"{name}: timestep metered / ANN forward", "value": t["timestep metered"] / t["ann one"]}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calibration-tokens", type=int, default=16384)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--conversion-only", action="store_true", help="the conversion rows, no execution ratios")
    args = parser.parse_args()
    (model, tokenizer, _), load_s = timed(load_base_model, "smollm2-135m", args.device)
    config = slm.SpikingConfig(calibration_tokens=args.calibration_tokens, rotation="online")
    # this machine's speed drifts within minutes: the unconverted model's forward brackets the conversion
    base, _, _ = load_base_model("smollm2-135m", args.device)
    held_out = eval_windows(tokenizer, args.calibration_tokens).to(args.device)
    before = batched_forward_time(base, held_out, config.batch_size, args.device)
    state = slm.convert(model, config, tokenizer=tokenizer, show_progress=False)
    after = batched_forward_time(base, held_out, config.batch_size, args.device)
    del base
    with tempfile.TemporaryDirectory() as tmp:
        _, save_s = timed(slm.save, model, tmp)
    ann_mode = plain_forward_time(model, tokenizer, args.calibration_tokens, config.batch_size, args.device)
    plain = (before + after) / 2
    fit = config.fit
    steps = fit.total_steps
    sites = len(state.site_names)
    conversion = state.fit["calibrate_s"] + state.fit["fit_s"]
    rows = [
        {"quantity": "load (s)", "value": load_s},
        {"quantity": "calibrate (s)", "value": state.fit["calibrate_s"]},
        {"quantity": "of which the prefix search (s)", "value": state.fit["prefix_search"].get("seconds", 0.0)},
        {"quantity": "fit (s)", "value": state.fit["fit_s"]},
        {"quantity": "save (s)", "value": save_s},
        {"quantity": "conversion = calibrate + fit (s)", "value": conversion},
        {"quantity": f"plain ANN forward over {args.calibration_tokens} tokens, before the conversion (s)", "value": before},
        {"quantity": "the same, after the conversion (s)", "value": after},
        {"quantity": "the converted model's ann mode, after the conversion (s)", "value": ann_mode},
        {"quantity": "conversion / plain forward, mean of before and after (target <= 1.3)", "value": conversion / plain},
        {"quantity": "calibrate / plain forward", "value": state.fit["calibrate_s"] / plain},
        {"quantity": "fit / conversion (target <= 0.25)", "value": state.fit["fit_s"] / conversion},
        {"quantity": "fit throughput (site-sample-steps / s)",
         "value": sites * fit.batch_samples * steps / state.fit["fit_s"]},
    ]
    meta = {"device": args.device, "sites": sites, "fit_steps": steps, "calibration_tokens": state.fit["calibration_tokens"]}
    if args.conversion_only:
        write("speed_conversion", rows, meta)
        return
    windows = eval_windows(tokenizer, args.tokens).to(args.device)
    agreement = timestep_agreement(model, windows[:1])
    ann = interleaved_medians(model, {"ann": (windows, "ann", False)}, 2)["ann"]
    rows.append({"quantity": f"ANN forward, {windows.numel()} tokens (s)", "value": ann})
    rows += ratios(model, windows, 8, "")
    rows += [{"quantity": "T = 8 fp32: timestep vs fused logits, relative norm", "value": agreement["rel"]},
             {"quantity": "T = 8 fp32: timestep vs fused top-1 agreement", "value": agreement["top1"]}]
    for timesteps in (6, 10):    # speed only: a small calibration is enough to time the executions
        other, _, _ = load_base_model("smollm2-135m", args.device)
        slm.convert(other, slm.SpikingConfig(timesteps=timesteps, calibration_tokens=2048), tokenizer=tokenizer,
                    show_progress=False)
        rows += ratios(other, windows, timesteps, " (2k-token calibration)")
        del other
    rows.append({"quantity": "peak RSS (GB)", "value": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6})
    write("speed", rows, meta)


if __name__ == "__main__":
    main()
