"""Perplexity of SmolLM2-135M as a spiking model: T x neuron family (paper Tables 1, 5, 6, 7, 12).

One calibration pass is shared by every row (the samples do not depend on the neuron); each row fits
its neurons on them and evaluates the same held-out windows.
    python bench/quality.py [--eval-tokens 8192] [--timesteps 6 8 10]
"""

from __future__ import annotations

import argparse
import copy

import spiking_lm_plugin as slm
from spiking_lm_plugin.conversion import calibrate

from _common import eval_windows, fit_and_measure, load, perplexity, write

METHODS = [  # (row label, neuron preset, grains, extra config)
    ("binary / LAS", "binary", 1, {}),
    ("LAS outlier-aware (oat)", "oat", 2, {}),
    ("two-spike (SpikedAttention)", "two-spike", 1, {}),
    ("single grain", "single-grain", 1, {}),
    ("multi-grain 2 (joint, default)", "multi-grain", 2, {}),
    ("multi-grain 3", "multi-grain", 3, {}),
    ("grain = T", "multi-grain", None, {}),
    ("multi-grain 2, alternating (Alg. 1)", "multi-grain", 2, {"joint": False}),
    ("multi-grain 2, tied h=theta", "tied", 2, {}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--calibration-tokens", type=int, default=16384)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[6, 8, 10])
    parser.add_argument("--rotation", default="online")
    parser.add_argument("--methods", nargs="*", default=None, help="subset of row labels")
    args = parser.parse_args()
    model, tokenizer = load()
    windows = eval_windows(tokenizer, args.eval_tokens)
    ann = perplexity(model, windows)
    base = slm.SpikingConfig(calibration_tokens=args.calibration_tokens, rotation=args.rotation)
    calib = calibrate(model, base, tokenizer=tokenizer)
    rows = [{"T": "-", "method": "ANN", "ppl": ann, "vs ANN": 0.0, "fit s": 0.0}]
    for T in args.timesteps:
        # tau headroom "auto" depends on T: re-normalize the shared calibration for it
        calib_t = calib.for_config(slm.SpikingConfig(**{**base.to_dict(), "timesteps": T}))
        for label, preset, grains, extra in METHODS:
            if args.methods and label not in args.methods:
                continue
            grains = T if grains is None else min(grains, T)
            config = copy.deepcopy(base)
            config.timesteps, config.grains, config.neuron = T, grains, preset
            for key, value in extra.items():
                setattr(config.fit, key, value)
            ppl, state = fit_and_measure(model, calib_t, config, windows)
            rows.append({"T": T, "method": label, "ppl": ppl, "vs ANN": ppl / ann - 1, "fit s": state.fit["fit_s"]})
            print(rows[-1], flush=True)
    meta = {"eval_tokens": int(windows.numel()), "calibration_tokens": calib.tokens, "rotation": args.rotation,
            "sites": "all"}
    write("quality" if not args.methods else "quality_subset", rows, meta)


if __name__ == "__main__":
    main()
