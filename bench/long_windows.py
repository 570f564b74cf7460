"""Quality on windows longer than the calibration's: one tau per RoPE pair at q and k, and the attention
mass correction, against the plain ANN and the analog reference, over several fitting seeds.

The conversion calibrates on 512-token windows; lm-eval's perplexity tasks score whole documents in
windows up to the model's context. One calibration is re-normalized per tau variant (no second forward),
each fitting seed fitted once per variant, and every fit evaluated with and without the mass correction (an
evaluation-time switch, the same neurons) on held-out enwiki-excerpt windows of each length and on Botchan.
    python bench/long_windows.py [--timesteps 8] [--seeds 0 1 2] [--lengths 512 2048]
"""

from __future__ import annotations

import argparse
import statistics

import spiking_lm_plugin as slm
from spiking_lm_plugin.conversion import calibrate
from spiking_lm_plugin.fitting import FitConfig

from _common import botchan_windows, energy, eval_windows, fit_and_install, load, perplexity, write

TAU_VARIANTS = {"per channel": False, "one per RoPE pair (default)": True}


def perplexities(model, texts: dict, mode: str) -> dict[str, float]:
    """Perplexity of every text in ``mode`` (2,048 tokens per batch)."""
    with model.spiking.use(mode=mode):
        return {name: perplexity(model, w, batch=max(1, 2048 // w.shape[1])) for name, w in texts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--enwiki-tokens", type=int, default=8192, help="held-out tokens per window length")
    parser.add_argument("--botchan-tokens", type=int, default=8192)
    args = parser.parse_args()
    model, tokenizer = load()
    texts = {f"enwiki {n}": eval_windows(tokenizer, args.enwiki_tokens, n) for n in args.lengths}
    texts["botchan 512"] = botchan_windows(tokenizer, args.botchan_tokens)
    calib = calibrate(model, slm.SpikingConfig(), tokenizer=tokenizer, show_progress=False)
    refs = {mode: perplexities(model, texts, mode) for mode in ("ann", "analog")}
    print(refs, flush=True)
    sample = texts[f"enwiki {args.lengths[0]}"][:1]      # the energy per token: one window of the first length
    rows, runs = [], []
    for T in args.timesteps:
        for variant, pairs in TAU_VARIANTS.items():
            base = slm.SpikingConfig(timesteps=T, rope_pair_tau=pairs)
            calib_v = calib.for_config(base)
            results: dict[bool, list[dict]] = {False: [], True: []}
            for seed in args.seeds:
                config = slm.SpikingConfig(**{**base.to_dict(), "fit": FitConfig(seed=seed)})
                fit_and_install(model, calib_v, config)
                for mass in (False, True):     # an evaluation-time switch: the same neurons
                    model.spiking.mass_correction = mass
                    ppl = perplexities(model, texts, "fused")
                    _, mj = energy(model, sample)
                    results[mass].append({**ppl, "mJ/token": mj})
                    runs.append({"T": T, "tau": variant, "mass correction": mass, "seed": seed, **ppl, "mJ/token": mj})
                    print(runs[-1], flush=True)
            for mass, fits in results.items():
                row = {"T": T, "q/k tau": variant, "mass correction": "on" if mass else "off", "seeds": len(fits)}
                for name in texts:
                    vs_ann = [f[name] / refs["ann"][name] - 1 for f in fits]
                    row[f"{name} vs ANN"] = statistics.fmean(vs_ann)
                    row[f"{name} vs analog"] = statistics.fmean(f[name] / refs["analog"][name] - 1 for f in fits)
                    row[f"{name} std"] = statistics.stdev(vs_ann) if len(vs_ann) > 1 else 0.0
                row["mJ/token"] = statistics.fmean(f["mJ/token"] for f in fits)
                rows.append(row)
    write("long_windows", rows, {"references": refs, "tokens": {k: int(w.numel()) for k, w in texts.items()},
                                 "runs": runs})


if __name__ == "__main__":
    main()
