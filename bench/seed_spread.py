"""How much the fitting seed moves perplexity: SmolLM2-135M with the default recipe, joint fitting (the
default) vs the paper's alternating Alg. 1, several fitting seeds, on the ablation's held-out enwiki-excerpt tokens.

The seed only drives the fitting minibatches (``FitConfig.seed``); the calibration pass (reservoirs, tau,
prefix, rotation) is shared by every row, so the spread is the fit's alone. It says how far apart two
recipes must be before a perplexity difference means anything.
    python bench/seed_spread.py [--eval-tokens 20480] [--timesteps 6 8] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics

import spiking_lm_plugin as slm
from spiking_lm_plugin.conversion import calibrate
from spiking_lm_plugin.fitting import FitConfig

from _common import eval_windows, fit_and_measure, load, perplexity, write

FITTINGS = {"alternating (Alg. 1)": False, "joint (default)": True}


def summary(T: int, fitting: str, changes: list[float]) -> dict:
    """One table row: the spread of the relative perplexity increase over the seeds."""
    return {"T": T, "fitting": fitting, "seeds": len(changes), "mean vs ANN": statistics.fmean(changes),
            "std": statistics.stdev(changes) if len(changes) > 1 else 0.0, "min": min(changes), "max": max(changes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-tokens", type=int, default=20480)
    parser.add_argument("--calibration-tokens", type=int, default=16384)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[6, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    model, tokenizer = load()
    windows = eval_windows(tokenizer, args.eval_tokens)
    ann = perplexity(model, windows)
    base = slm.SpikingConfig(calibration_tokens=args.calibration_tokens)
    calib = calibrate(model, base, tokenizer=tokenizer, show_progress=False)
    rows, runs = [], []
    for T in args.timesteps:
        # the fitting settings do not enter the calibration: re-normalize it once per T
        calib_t = calib.for_config(slm.SpikingConfig(**{**base.to_dict(), "timesteps": T}))
        for fitting, joint in FITTINGS.items():
            changes = []
            for seed in args.seeds:
                config = slm.SpikingConfig(**{**base.to_dict(), "timesteps": T,
                                              "fit": FitConfig(joint=joint, seed=seed)})
                ppl, state = fit_and_measure(model, calib_t, config, windows)
                changes.append(ppl / ann - 1)
                runs.append({"T": T, "fitting": fitting, "seed": seed, "ppl": ppl, "vs ANN": changes[-1],
                             "fit loss": statistics.fmean(state.fit["site_loss"]), "fit s": state.fit["fit_s"]})
                print(runs[-1], flush=True)
            rows.append(summary(T, fitting, changes))
    meta = {"eval_tokens": int(windows.numel()), "calibration_tokens": args.calibration_tokens, "ann_ppl": ann,
            "runs": runs}
    write("seed_spread", rows, meta)


if __name__ == "__main__":
    main()
