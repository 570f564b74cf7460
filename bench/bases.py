"""Do the bases learn? The fitted bases B of the default multi-grain neuron (2 grains) on real SmolLM2
activations at several T, and whether the optimizer or the optimum holds them where they end.

For each T, on one calibration (16,384 tokens, all 301 sites): the default fit; the same fit with a 10x and
a 30x base learning rate (an optimizer that held the bases back would end lower with more room); started from
other bases (1.7 and 2.4: the same end point means an optimum, not the initialization); and, after the
default fit, the per-step output weights d_t set free and solved by least squares on the fit's own spikes
(what any choice of bases could at most reach with those thresholds and resets). The loss is the fit's
objective (the relative MSE of eq. 9, mean over the sites); B quantiles are over all sites' grains.
    python bench/bases.py [--timesteps 4 5 6 8]
"""

from __future__ import annotations

import argparse

import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.conversion import calibrate
from spiking_lm_plugin.fitting import FitConfig, fit_neurons
from spiking_lm_plugin.fitting.objective import site_mse, site_scale
from spiking_lm_plugin.neurons import NeuronBank, NeuronSpec
from spiking_lm_plugin.neurons.dynamics import encode_frames

from _common import load, timed, write


@torch.no_grad()
def free_weights_loss(bank: NeuronBank, u: torch.Tensor) -> float:
    """Mean relative MSE with each site's d_t re-solved by least squares on the bank's own spikes."""
    columns = lambda p: [p[:, t : t + 1] for t in range(p.shape[1])]  # noqa: E731
    frames = encode_frames(u, columns(bank.thresholds()), columns(bank.resets()), bank.v0[:, None])
    spikes = frames.permute(1, 2, 0).double()                                  # [sites, N, T]
    gram = spikes.transpose(1, 2) @ spikes
    gram = gram + 1e-9 * torch.eye(gram.shape[-1], dtype=gram.dtype)         # a step that never fires
    d = torch.linalg.solve(gram, spikes.transpose(1, 2) @ u.double().unsqueeze(-1))
    return float(site_mse((spikes @ d).squeeze(-1).float(), u, site_scale(u, relative=True)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[4, 5, 6, 8])
    args = parser.parse_args()
    model, tokenizer = load()
    calib = calibrate(model, slm.SpikingConfig(), tokenizer=tokenizer, show_progress=False)
    default = FitConfig()
    variants = {"default (lr_base 0.01, B0 2)": (default, 2.0),
                "lr_base x10": (FitConfig(lr_base=10 * default.lr_base), 2.0),
                "lr_base x30": (FitConfig(lr_base=30 * default.lr_base), 2.0),
                "B0 1.7": (default, 1.7), "B0 2.4": (default, 2.4)}
    rows = []
    for T in args.timesteps:
        samples = calib.for_config(slm.SpikingConfig(timesteps=T)).samples
        for label, (config, base) in variants.items():
            result, seconds = timed(fit_neurons, NeuronSpec.preset("multi-grain", T, 2, base_init=base),
                                    samples, config)
            bases = result.bank.bases.detach().flatten()
            rows.append({"T": T, "fit": label, "loss": float(result.loss.mean()),
                         "B q05": float(bases.quantile(0.05)), "B median": float(bases.median()),
                         "B q95": float(bases.quantile(0.95)),
                         "free d_t loss": free_weights_loss(result.bank, samples) if label.startswith("default")
                         else "-", "fit s": seconds})
            print(rows[-1], flush=True)
    write("bases", rows, {"calibration_tokens": calib.tokens, "samples_per_site": int(calib.samples.shape[1])})


if __name__ == "__main__":
    main()
