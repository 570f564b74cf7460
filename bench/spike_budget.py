"""The early-spike mask after fitting (the paper) vs inside the fit (the thresholds learn that only k spikes
come): held-out perplexity and the AC count of one 512-token sample, SmolLM2-135M, default recipe.
    python bench/spike_budget.py [--timesteps 6 8] [--k 2] [--eval-tokens 4096]
"""

from __future__ import annotations

import argparse

import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.energy import EnergyMeter

from _common import eval_windows, load, perplexity, write


def measure(model, sample, windows) -> tuple[float, float]:
    meter = EnergyMeter()
    with torch.no_grad(), model.spiking.use(mode="fused", meter=meter):
        model(sample)
    with model.spiking.use(mode="fused", meter=None):     # the evaluation is not metered
        ppl = perplexity(model, windows)
    return ppl, meter.summary()["ac"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[6, 8])
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--eval-tokens", type=int, default=4096)
    args = parser.parse_args()
    rows = []
    ann_ppl = None
    for T in args.timesteps:
        results = {}
        for name, recipe in (("post-hoc", dict(spike_mask=args.k)),
                             ("in fit", dict(spike_mask=args.k, mask_in_fit=True))):
            model, tokenizer = load()
            sample = eval_windows(tokenizer, 512)[:1]
            windows = eval_windows(tokenizer, args.eval_tokens)
            if ann_ppl is None:
                ann_ppl = perplexity(model, windows)
            slm.convert(model, slm.SpikingConfig(timesteps=T, **recipe), tokenizer=tokenizer, show_progress=False)
            if name == "post-hoc":
                model.spiking.spike_mask = None
                results["no mask"] = measure(model, sample, windows)
                model.spiking.spike_mask = args.k
            results[name] = measure(model, sample, windows)
        base_ppl, base_ac = results["no mask"]
        for name, (ppl, ac) in results.items():
            rows.append({"T": T, "mask": name if name == "no mask" else f"k = {args.k}, {name}", "ppl": ppl,
                         "vs ANN": f"{ppl / ann_ppl - 1:+.2%}", "vs no mask": f"{ppl / base_ppl - 1:+.2%}",
                         "AC (G)": ac / 1e9, "AC vs no mask": f"{ac / base_ac - 1:+.1%}"})
            print(rows[-1], flush=True)
    write("spike_budget", rows, {"k": args.k, "eval_tokens": args.eval_tokens, "ann_ppl": ann_ppl})


if __name__ == "__main__":
    main()
