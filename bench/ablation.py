"""Outlier handling, one feature at a time: SmolLM2-135M perplexity on held-out
enwiki-excerpt tokens for T in {6, 8, 10}, starting from a recipe with every feature off (no rotation,
no prefix, per-tensor tau = max, no layer-wise calibration), switching on rotation (online Hadamard at
down_proj), prefixed outlier tokens, per-channel tau, tau headroom and layer-wise calibration one at a
time, then all. Rows that share a calibration recipe share one calibration pass. ``--rows`` recomputes
some rows and keeps the others of an existing results file.
    python bench/ablation.py [--eval-tokens 20480] [--timesteps 6 8 10] [--rows LABEL ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import spiking_lm_plugin as slm
from spiking_lm_plugin.conversion import calibrate

from _common import OUT, eval_windows, fit_and_measure, load, perplexity, write

OFF = {"rotation": "none", "prefix": "none", "tau": "tensor", "tau_headroom": 1.0}
ALL_ON = {"rotation": "online", "prefix": "auto", "tau": "channel", "tau_headroom": "auto"}
ROWS = [  # (label, calibration recipe, layer-wise)
    ("all off", OFF, False),
    ("+ rotation", {**OFF, "rotation": "online"}, False),
    ("+ prefix", {**OFF, "prefix": "auto"}, False),
    ("+ per-channel tau", {**OFF, "tau": "channel"}, False),
    ("+ tau headroom", {**OFF, "tau_headroom": 1.5}, False),
    ("+ layer-wise", OFF, True),
    ("all on but headroom", {**ALL_ON, "tau_headroom": 1.0}, False),
    ("all on but outlier tokens kept", {**ALL_ON, "exclude_outlier_tokens": False}, False),
    ("all on, no layer-wise (default)", ALL_ON, False),
    ("all on", ALL_ON, True),
]


def merged(rows: list[dict], previous: Path) -> list[dict]:
    """Rows of this run plus the rows of ``previous`` it did not recompute, in table order."""
    if not previous.is_file():
        return rows
    order = {label: i for i, (label, _, _) in enumerate(ROWS)}
    fresh = {(r["features"], r["T"]) for r in rows}
    kept = [r for r in json.loads(previous.read_text())["rows"]
            if (r["features"], r["T"]) not in fresh and (r["features"] == "ANN" or r["features"] in order)]
    ranked = lambda r: (-1 if r["features"] == "ANN" else order[r["features"]], -1 if r["T"] == "-" else r["T"])  # noqa: E731
    return sorted(rows + kept, key=ranked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-tokens", type=int, default=20480)
    parser.add_argument("--calibration-tokens", type=int, default=16384)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[6, 8, 10])
    parser.add_argument("--rows", nargs="*", default=None, help="subset of row labels")
    args = parser.parse_args()
    rows: list[dict] = []
    previous = OUT / "ablation.json"
    calibrations: dict[str, tuple] = {}
    ann = None
    for label, recipe, layerwise in ROWS:
        if args.rows and label not in args.rows:
            continue
        key = repr(sorted(recipe.items()))
        if key not in calibrations:
            model, tokenizer = load()          # a fresh base: rotation rewrites weights in place
            windows = eval_windows(tokenizer, args.eval_tokens)
            if ann is None:
                ann = perplexity(model, windows)
                rows.append({"features": "ANN", "T": "-", "prefix": "-", "ppl": ann, "vs ANN": 0.0})
            base = slm.SpikingConfig(calibration_tokens=args.calibration_tokens, **recipe)
            calib = calibrate(model, base, tokenizer=tokenizer, show_progress=False)
            calibrations = {key: (model, calib, base)}   # one model in memory at a time
        model, calib, base = calibrations[key]
        for T in args.timesteps:
            config = slm.SpikingConfig(**{**base.to_dict(), "timesteps": T, "layerwise": True if layerwise else None})
            calib_t = calib.for_config(config)          # tau headroom "auto" depends on T
            ppl, state = fit_and_measure(model, calib_t, config, windows, layerwise)
            layerwise_s = state.fit.get("layerwise", {}).get("seconds", 0.0)
            rows.append({"features": label, "T": T, "prefix": str(calib.prefix), "ppl": ppl, "vs ANN": ppl / ann - 1,
                         "fit s": state.fit["fit_s"], "layer-wise s": layerwise_s})
            print(rows[-1], flush=True)
            rows[0].update({"fit s": 0.0, "layer-wise s": 0.0})
            meta = {"eval_tokens": int(windows.numel()), "calibration_tokens": args.calibration_tokens,
                    "neuron": "multi-grain 2", "sites": "all"}
            if args.rows:   # the table's command is the one that regenerates every row
                meta.update(command="python bench/ablation.py", rows_refreshed=args.rows)
            write("ablation", merged(rows, previous) if args.rows else rows, meta, quiet=True)   # after every row


if __name__ == "__main__":
    main()
