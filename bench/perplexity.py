"""Perplexity of SmolLM2-135M, ANN vs spiking, on >= 20k held-out tokens of enwiki-excerpt (disjoint from
calibration), for the default recipe at several T and rotation settings.
    python bench/perplexity.py [--eval-tokens 20480] [--timesteps 6 8 10] [--rotations none online full]
"""

from __future__ import annotations

import argparse

import spiking_lm_plugin as slm

from _common import eval_windows, load, perplexity, timed, write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-tokens", type=int, default=20480)
    parser.add_argument("--calibration-tokens", type=int, default=16384)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[6, 8, 10])
    parser.add_argument("--rotations", nargs="+", default=["online"])
    parser.add_argument("--sites", default=None, help="comma list of site types (default: all)")
    args = parser.parse_args()
    rows = []
    ann = None
    for rotation in args.rotations:
        for T in args.timesteps:
            model, tokenizer = load()
            windows = eval_windows(tokenizer, args.eval_tokens)
            if ann is None:
                ann, ann_s = timed(perplexity, model, windows)
                rows.append({"T": "-", "rotation": "-", "ppl": ann, "vs ANN": 0.0, "conversion s": 0.0,
                             "eval s": ann_s})
            config = slm.SpikingConfig(timesteps=T, rotation=rotation, calibration_tokens=args.calibration_tokens,
                                       **({"sites": tuple(args.sites.split(","))} if args.sites else {}))
            state = slm.convert(model, config, tokenizer=tokenizer, show_progress=False)
            ppl, eval_s = timed(perplexity, model, windows)
            rows.append({"T": T, "rotation": rotation, "ppl": ppl, "vs ANN": ppl / ann - 1,
                         "conversion s": state.fit["calibrate_s"] + state.fit["fit_s"], "eval s": eval_s})
            print(rows[-1], flush=True)
    write("perplexity", rows, {"eval_tokens": int(windows.numel()), "sites": args.sites or "all"})


if __name__ == "__main__":
    main()
