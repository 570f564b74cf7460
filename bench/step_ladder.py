"""Where more steps are free, and whether a smaller code range pays, at T = 5 and 4.

Measured on calibration-split windows only (never the held-out text), like the per-site T selection of
``fewer_timesteps.py``: starting from the per-site T recipe that selection chose (its groups at T + 2),
the groups whose first bump added almost no ACs (the softmax map; the gate product's factors) get two more
steps; then, at T = 4, every neuron's code range is shrunk to s x tau (d_t = s B^-t: values above s tau
saturate; the robust-tau lever as one global factor) to see whether the resolution it buys is worth the
clipping. Each row: perplexity on the selection windows, ACs and energy of one 512-token enwiki sample.
    python bench/step_ladder.py [--select-windows 16] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses

import spiking_lm_plugin as slm
from spiking_lm_plugin.conversion import install

from _common import held_out_texts, load, perplexity, write
from fewer_timesteps import energy, fitted_state

#: the 2026-12-03 selection's recipes (docs/BENCHMARKS.md, "Which site types need the steps")
SELECTED = {5: {"softmax": 7, "gate_act": 7, "up": 7, "k": 7, "q": 7},
            4: {"softmax": 6, "gate_act": 6, "up": 6, "k": 6, "q": 6}}


def with_code_range(config: slm.SpikingConfig, scale: float) -> slm.SpikingConfig:
    """``config`` whose neuron spec codes up to ``scale`` x tau (d_t = scale B^-t)."""
    class Scaled(type(config)):
        def neuron_spec(self, timesteps=None):
            return dataclasses.replace(super().neuron_spec(timesteps), weight_scale=scale)
    return Scaled(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--select-windows", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="fitting seed")
    args = parser.parse_args()
    model, tokenizer = load()
    calib = slm.conversion.calibrate(model, slm.SpikingConfig(), tokenizer=tokenizer, show_progress=False)
    select = calib.windows[: args.select_windows]
    sample = held_out_texts(tokenizer, 512, 512)["enwiki"][:1]
    with model.spiking.use(mode="analog"):
        analog = perplexity(model, select)
    rows = [{"T": "-", "recipe": "analog reference", "site T": "-", "code range": "-", "selection ppl": analog,
             "vs analog": 0.0, "AC (G)": 0.0, "mJ/token": "-"}]

    def measure(T: int, label: str, steps: dict[str, int], scale: float = 1.0) -> None:
        config = slm.SpikingConfig(timesteps=T, site_timesteps=steps, fit=slm.FitConfig(seed=args.seed))
        install(model, fitted_state(model, calib, with_code_range(config, scale) if scale != 1.0 else config))
        with model.spiking.use(mode="fused"):
            ppl = perplexity(model, select)
        ac, mj = energy(model, sample)
        rows.append({"T": T, "recipe": label, "site T": steps, "code range": scale, "selection ppl": ppl,
                     "vs analog": ppl / analog - 1, "AC (G)": ac / 1e9, "mJ/token": mj})
        print(rows[-1], flush=True)

    for T in (5, 4):
        chosen = SELECTED[T]
        measure(T, "selected per-site T", chosen)
        measure(T, "softmax + 2 more", {**chosen, "softmax": T + 4})
        measure(T, "softmax, gate_act, up + 2 more", {**chosen, "softmax": T + 4, "gate_act": T + 4, "up": T + 4})
    best4 = {**SELECTED[4], "softmax": 8}
    measure(4, "softmax + 4 more", {**SELECTED[4], "softmax": 10})
    for scale in (0.75, 0.55):
        measure(4, "softmax + 2 more, smaller code range", best4, scale)
    write("step_ladder", rows, {"select_tokens": int(select.numel()), "fit_seed": args.seed})


if __name__ == "__main__":
    main()
