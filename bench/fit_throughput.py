"""Fitting throughput on a SmolLM2-sized problem (30 layers x 10 sites + head, 16k samples, T=8, 2 grains)
and the mean relative MSE of binary vs multi-grain on real SmolLM2 activations.
    python bench/fit_throughput.py
"""

from __future__ import annotations

import argparse

import spiking_lm_plugin as slm
from spiking_lm_plugin.conversion import calibrate
from spiking_lm_plugin.fitting import FitConfig, evaluate, fit_neurons
from spiking_lm_plugin.neurons import NeuronBank, NeuronSpec

from _common import load, timed, write


def main() -> None:
    model, tokenizer = load()
    calib, calib_s = timed(calibrate, model, slm.SpikingConfig(calibration_tokens=8192), None, tokenizer, False)
    samples = calib.samples
    config = FitConfig()
    steps = config.total_steps
    rows = []
    for T in (6, 8):
        binary = evaluate(NeuronBank(NeuronSpec.preset("binary", T), samples.shape[0]), samples)
        result, fit_s = timed(fit_neurons, NeuronSpec.preset("multi-grain", T, 2), samples, config)
        rows.append({"T": T, "sites": samples.shape[0], "samples/site": samples.shape[1], "steps": steps,
                     "fit (s)": fit_s,
                     "site-sample-steps / s": samples.shape[0] * config.batch_samples * steps / fit_s,
                     "rel. MSE binary": float(binary.mean()), "rel. MSE multi-grain": float(result.loss.mean()),
                     "ratio": float(result.loss.mean() / binary.mean())})
        print(rows[-1], flush=True)
    write("fit_throughput", rows, {"calibrate_s": calib_s, "calibration_tokens": calib.tokens})


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()   # --help explains; no options
    main()
