"""What the exact seeded fallback costs where no Hadamard is known: SmolLM2-135M's down_proj input
(1536 = 12 x 128, a Hadamard exists) converted with the default recipe twice, once with the Hadamard and
once with the fallback forced (``online_transform="random"``: a seeded random orthogonal 3 x 3 times a
Walsh-Hadamard 512). Perplexity on held-out enwiki-excerpt tokens against the plain ANN and against the
analog reference of each row (same prefix and transform, every site analog).
    python bench/transform_fallback.py [--eval-tokens 20480] [--timesteps 6 8]"""

from __future__ import annotations

import argparse

import spiking_lm_plugin as slm
from spiking_lm_plugin.conversion import calibrate

from _common import eval_windows, fit_and_measure, load, perplexity, write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-tokens", type=int, default=20480)
    parser.add_argument("--calibration-tokens", type=int, default=16384)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[6, 8])
    args = parser.parse_args()
    rows, ann = [], None
    for choice in ("hadamard", "random"):
        model, tokenizer = load()
        windows = eval_windows(tokenizer, args.eval_tokens)
        if ann is None:
            ann = perplexity(model, windows)
            rows.append({"transform": "ANN (plain)", "T": "-", "ppl": ann, "vs ANN": "-", "vs analog": "-"})
        base = slm.SpikingConfig(timesteps=max(args.timesteps), online_transform=choice,
                                 calibration_tokens=args.calibration_tokens)
        calib = calibrate(model, base, tokenizer=tokenizer, show_progress=False)
        label = next(iter(calib.transforms.values()))
        with model.spiking.use(mode="analog"):             # analog sites behind the prefix and transform
            analog = perplexity(model, windows)
        rows.append({"transform": f"{label}: analog reference", "T": "-", "ppl": analog,
                     "vs ANN": f"{analog / ann - 1:+.2%}", "vs analog": "-"})
        for t in args.timesteps:
            config = slm.SpikingConfig(timesteps=t, online_transform=choice,
                                       calibration_tokens=args.calibration_tokens)
            ppl, _ = fit_and_measure(model, calib.for_config(config), config, windows)
            rows.append({"transform": label, "T": t, "ppl": ppl, "vs ANN": f"{ppl / ann - 1:+.2%}",
                         "vs analog": f"{ppl / analog - 1:+.2%}"})
    write("transform_fallback", rows, {"eval_tokens": args.eval_tokens,
                                       "calibration_tokens": args.calibration_tokens})


if __name__ == "__main__":
    main()
