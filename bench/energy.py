"""Energy of ANN vs spiking SmolLM2-135M on one 512-token sample (paper Tables 3/13/14/16 layout):
MAC and AC counts, joules per sample, with and without the read/write model.
    python bench/energy.py [--timesteps 6 8]
"""

from __future__ import annotations

import argparse

import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.energy import EnergyConstants, EnergyMeter

from _common import eval_windows, load, write


def measure(model, sample, mode: str, read_write: bool) -> dict:
    meter = EnergyMeter(EnergyConstants(read_write=read_write))
    with torch.no_grad(), model.spiking.use(mode=mode, meter=meter):
        model(sample)
    return meter.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[6, 8])
    parser.add_argument("--calibration-tokens", type=int, default=16384)
    args = parser.parse_args()
    rows = []
    for T in args.timesteps:
        model, tokenizer = load()
        sample = eval_windows(tokenizer, 512)[:1]
        slm.convert(model, slm.SpikingConfig(timesteps=T, calibration_tokens=args.calibration_tokens,
                                             rotation="online"), tokenizer=tokenizer, show_progress=False)
        for rw in (False, True):
            ann = measure(model, sample, "ann", rw)
            snn = measure(model, sample, "fused", rw)
            if T == args.timesteps[0]:
                rows.append({"model": "ANN", "T": "-", "read/write": rw, "MAC (G)": ann["mac"] / 1e9,
                             "AC (G)": 0.0, "energy (J)": ann["energy_j"], "firing rate": "-", "saving": "-"})
            rows.append({"model": "spiking", "T": T, "read/write": rw, "MAC (G)": snn["mac"] / 1e9,
                         "AC (G)": snn["ac"] / 1e9, "energy (J)": snn["energy_j"],
                         "firing rate": snn["firing_rate"], "saving": f"{1 - snn['energy_j'] / ann['energy_j']:.1%}"})
            print(rows[-1], flush=True)
    constants = EnergyConstants()
    write("energy", rows, {"sample_tokens": 512, "e_mac_pj": constants.e_mac_pj, "e_ac_pj": constants.e_ac_pj,
                           "e_rw_pj": constants.e_rw_pj})


if __name__ == "__main__":
    main()
