"""Energy of ANN vs spiking SmolLM2-135M on one 512-token sample, paper Tables 13-17 layout: MAC and AC
counts, compute (MAC & AC), neuron and read/write joules, the read/write share, firing rates per slot and
per fan-out, held-out perplexity; without the early-spike mask and with it (k = 2, applied after fitting
as in the paper), each priced by our cost model and by the paper's (eq. 18, 59, 60).
    python bench/energy.py [--timesteps 6 8] [--eval-tokens 4096]
"""

from __future__ import annotations

import argparse

import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.energy import EnergyConstants, EnergyMeter, cost_model

from _common import eval_windows, load, perplexity, write

MASKS = (None, 2)


def measure(model, sample, mode: str, convention: str) -> dict:
    meter = EnergyMeter(EnergyConstants(read_write=True), cost_model=cost_model(convention))
    with torch.no_grad(), model.spiking.use(mode=mode, meter=meter):
        model(sample)
    return meter.summary()


def row(label: str, T, mask, convention: str, s: dict, ppl: float, ann: dict | None) -> dict:
    ann_mode = ann is None
    compute = s["ann_compute_j"] if ann_mode else s["compute_j"]
    rw = s["ann_read_write_j"] if ann_mode else s["read_write_j"]
    neuron = 0.0 if ann_mode else s["neuron_j"]
    total = compute + neuron + rw
    ann_total = total if ann_mode else ann["ann_compute_j"] + ann["ann_read_write_j"]
    return {"model": label, "T": T, "mask": mask or "-", "convention": convention,
            "MAC (G)": (s["ann_mac"] if ann_mode else s["mac"]) / 1e9, "AC (G)": 0.0 if ann_mode else s["ac"] / 1e9,
            "MAC & AC (J)": compute, "neuron (J)": neuron, "read/write (J)": rw, "total (J)": total,
            "read/write share": f"{rw / total:.1%}", "vs ANN": f"{total / ann_total:.1%}",
            "firing rate": "-" if ann_mode else s["firing_rate"],
            "fan-out rate": "-" if ann_mode else s["firing_rate_fanout"], "ppl": ppl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[6, 8])
    parser.add_argument("--calibration-tokens", type=int, default=16384)
    parser.add_argument("--eval-tokens", type=int, default=4096)
    args = parser.parse_args()
    rows = []
    for T in args.timesteps:
        model, tokenizer = load()
        sample = eval_windows(tokenizer, 512)[:1]
        windows = eval_windows(tokenizer, args.eval_tokens)
        if T == args.timesteps[0]:
            ann_ppl = perplexity(model, windows)
        slm.convert(model, slm.SpikingConfig(timesteps=T, calibration_tokens=args.calibration_tokens),
                    tokenizer=tokenizer, show_progress=False)
        for mask in MASKS:
            model.spiking.spike_mask = mask
            with model.spiking.use(mode="fused"):
                ppl = perplexity(model, windows)
            for convention in ("ours", "paper"):
                ann = measure(model, sample, "ann", convention)
                if T == args.timesteps[0] and mask is None:
                    rows.append(row("ANN", "-", None, convention, ann, ann_ppl, None))
                rows.append(row("spiking", T, mask, convention, measure(model, sample, "fused", convention), ppl, ann))
                print(rows[-1], flush=True)
    constants = EnergyConstants()
    write("energy", rows, {"sample_tokens": 512, "eval_tokens": args.eval_tokens, "e_mac_pj": constants.e_mac_pj,
                           "e_ac_pj": constants.e_ac_pj, "e_rw_pj": constants.e_rw_pj,
                           "e_neuron_pj": constants.e_neuron_pj})


if __name__ == "__main__":
    main()
