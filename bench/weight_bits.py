"""Paper Table 8 layout on SmolLM2-135M: weight bits {16, 8, 4} x {ANN, T = 8 grains 2, T = 8 grains 3,
T = 6 grains 2}. Per weight width: held-out perplexity (enwiki-excerpt evaluation split) of the plain ANN
with those weights (torchao, no rotation: what a user compares with), of the analog reference (the same
rotation, prefix and quantized weights, sites analog) and of each spiking model (fused); the accuracy task
for the ANN and T = 8 grains 2 (through spiking-hf, the recipe re-applied from the checkpoint); energy of
one 512-token sample in the paper's convention with read/write (eq. 59), weights read at their width.
    python bench/weight_bits.py [--bits 16 8 4] [--eval-tokens 20480] [--accuracy-limit 50] [--keep-other-bits]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import lm_eval
import torch
from lm_eval.tasks import TaskManager

import spiking_lm_plugin as slm
from spiking_lm_plugin.assets import resolve_model
from spiking_lm_plugin.energy import EnergyConstants, EnergyMeter, cost_model
from spiking_lm_plugin.lm_eval_model import SpikingHFLM
from spiking_lm_plugin.tasks_location import tasks_dir
from spiking_lm_plugin.weight_quantization import apply_weight_recipe

from _common import eval_windows, fit_and_measure, load, perplexity, timed, write

TASK = "spiking_enwiki_cloze"
RECIPES = [("T=8 g2", 8, 2), ("T=8 g3", 8, 3), ("T=6 g2", 6, 2)]


def paper_energy(model, sample, mode: str) -> dict:
    meter = EnergyMeter(EnergyConstants(read_write=True), cost_model=cost_model("paper"))
    with torch.no_grad(), model.spiking.use(mode=mode, meter=meter):
        model(sample)
    s = meter.summary()
    if mode == "ann":
        return {"MAC (G)": s["ann_mac"] / 1e9, "AC (G)": 0.0, "rw (mJ)": s["ann_read_write_j"] * 1e3,
                "energy (mJ)": s["ann_energy_j"] * 1e3}
    return {"MAC (G)": s["mac"] / 1e9, "AC (G)": s["ac"] / 1e9, "rw (mJ)": s["read_write_j"] * 1e3,
            "energy (mJ)": s["energy_j"] * 1e3}


def previous_rows(exclude: list[int]) -> list[dict]:
    """The rows of the last results file whose weight width is not being rerun."""
    previous = Path("bench/results/weight_bits.json")
    rows = json.loads(previous.read_text())["rows"] if previous.is_file() else []
    return [row for row in rows if int(row["weights"][1:]) not in exclude]


def accuracy(lm, limit: int) -> float:
    out = lm_eval.simple_evaluate(model=lm, tasks=[TASK], limit=limit,
                                  task_manager=TaskManager(include_path=str(tasks_dir())))
    return out["results"][TASK]["acc,none"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 8, 4])
    parser.add_argument("--eval-tokens", type=int, default=20480)
    parser.add_argument("--accuracy-limit", type=int, default=50, help="cloze documents per accuracy run (0: none)")
    parser.add_argument("--keep-other-bits", action="store_true",
                        help="keep the previous results' rows of the widths not in --bits (rerun one width)")
    args = parser.parse_args()
    path = resolve_model("smollm2-135m")
    rows = []
    kept = previous_rows(exclude=args.bits) if args.keep_other_bits else []
    with tempfile.TemporaryDirectory() as tmp:
        for bits in args.bits:
            model, tokenizer = load()
            windows = eval_windows(tokenizer, args.eval_tokens)
            sample = eval_windows(tokenizer, 512)[:1]
            slm.prepare(model, slm.SpikingConfig(rotation="none"))
            apply_weight_recipe(model, slm.SpikingConfig(weight_bits=bits).weight_recipe)
            with model.spiking.use(mode="ann"):
                ann_ppl = perplexity(model, windows)
            ann_acc = (accuracy(SpikingHFLM(pretrained=path, spiking="none", weight_bits=bits, device="cpu"),
                                args.accuracy_limit) if args.accuracy_limit else None)
            rows.append({"weights": f"W{bits}", "model": "ANN", "ppl": ann_ppl, "vs W ANN": 0.0, "vs analog": None,
                         "acc": ann_acc, **paper_energy(model, sample, "ann")})
            print(rows[-1], flush=True)
            model, tokenizer = load()
            calib = slm.calibrate(model, slm.SpikingConfig(weight_bits=bits), tokenizer=tokenizer, show_progress=False)
            with model.spiking.use(mode="analog"):
                analog = perplexity(model, windows)
            rows.append({"weights": f"W{bits}", "model": "analog reference", "ppl": analog,
                         "vs W ANN": analog / ann_ppl - 1, "vs analog": 0.0, "acc": None,
                         **{k: None for k in ("MAC (G)", "AC (G)", "rw (mJ)", "energy (mJ)")}})
            print(rows[-1], flush=True)
            for name, T, grains in RECIPES:
                config = slm.SpikingConfig(timesteps=T, grains=grains, weight_bits=bits)
                ppl, state = fit_and_measure(model, calib.for_config(config), config, windows)
                acc = None
                if args.accuracy_limit and (T, grains) == (8, 2):
                    ckpt = Path(tmp) / f"w{bits}"
                    slm.save(model, ckpt)
                    acc = accuracy(SpikingHFLM(pretrained=path, spiking=str(ckpt), device="cpu"), args.accuracy_limit)
                rows.append({"weights": f"W{bits}", "model": name, "ppl": ppl, "vs W ANN": ppl / ann_ppl - 1,
                             "vs analog": ppl / analog - 1, "acc": acc, **paper_energy(model, sample, "fused")})
                print(rows[-1], flush=True)
    rows = sorted(kept + rows, key=lambda row: -int(row["weights"][1:]))   # W16, W8, W4; stable within a width
    write("weight_bits", rows, {"eval_tokens": args.eval_tokens, "accuracy": f"{TASK}, {args.accuracy_limit} documents",
                                "energy": "paper convention with read/write (eq. 59), one 512-token sample",
                                "quantizer": "torchao IntxWeightOnlyConfig, symmetric; W8 per row (max), W4 groups of 32 (HQQ scales)"})


if __name__ == "__main__":
    main()
