"""Perplexity vs energy of the energy-aware fit: the spike penalty lambda (coding error + lambda x each
site's fan-out-weighted firing rate) swept at one T, beside the early-spike mask after and inside the fit
(from bench/results/spike_budget.json), and the two combined (``--masked-penalties``: the k = 2 mask in
the fit plus a penalty); a table and a PNG per T (``spike_pareto`` at T = 6, ``spike_pareto_t<T>`` else).
    python bench/spike_pareto.py [--timesteps 6] [--penalties 0.003 0.01 0.03] [--masked-penalties 0.003]
                                 [--eval-tokens 4096]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.energy import EnergyMeter

from _common import OUT, eval_windows, load, perplexity, write


def measure(model, sample, windows) -> tuple[float, float, float]:
    meter = EnergyMeter()
    with torch.no_grad(), model.spiking.use(mode="fused", meter=meter):
        model(sample)
    with model.spiking.use(mode="fused", meter=None):     # the evaluation is not metered
        ppl = perplexity(model, windows)
    summary = meter.summary()
    return ppl, summary["ac"], summary["energy_j"]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    labels = {"penalty": "spike penalty (lambda)", "mask": "early-spike mask k = 2",
              "mask + penalty": "mask k = 2 in the fit + penalty (lambda)"}
    for kind, marker in (("penalty", "o"), ("mask", "s"), ("mask + penalty", "^")):
        pts = [(r["AC (G)"], r["ppl"], r["fit"]) for r in rows if r["kind"] == kind]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, linestyle="" if kind == "mask" else "-",
                    label=labels[kind])
            for x, y, label in pts:
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("ACs of one 512-token sample (G)")
    ax.set_ylabel("held-out perplexity")
    ax.set_title(f"SmolLM2-135M, T = {rows[0]['T']}: perplexity vs spikes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, default=6)
    parser.add_argument("--penalties", type=float, nargs="+", default=[0.003, 0.01, 0.03])
    parser.add_argument("--masked-penalties", type=float, nargs="*", default=[],
                        help="penalties fitted with the k = 2 early-spike mask inside the dynamics as well")
    parser.add_argument("--eval-tokens", type=int, default=4096)
    args = parser.parse_args()
    rows = []
    budget = OUT / "spike_budget.json"
    if budget.is_file():
        for r in json.loads(budget.read_text())["rows"]:
            if r["T"] == args.timesteps:
                rows.append({"T": r["T"], "kind": "penalty" if r["mask"] == "no mask" else "mask",
                             "fit": "lambda 0" if r["mask"] == "no mask" else r["mask"].split(", ")[1],
                             "ppl": r["ppl"], "AC (G)": r["AC (G)"], "energy (mJ)": "-"})
    runs = [("penalty", p, None) for p in args.penalties] + [("mask + penalty", p, 2) for p in args.masked_penalties]
    for kind, penalty, mask in runs:
        model, tokenizer = load()
        sample = eval_windows(tokenizer, 512)[:1]
        windows = eval_windows(tokenizer, args.eval_tokens)
        config = slm.SpikingConfig(timesteps=args.timesteps, spike_mask=mask, mask_in_fit=mask is not None,
                                   fit=slm.FitConfig(spike_penalty=penalty))
        slm.convert(model, config, tokenizer=tokenizer, show_progress=False)
        ppl, ac, joules = measure(model, sample, windows)
        rows.append({"T": args.timesteps, "kind": kind, "fit": f"lambda {penalty:g}", "ppl": ppl,
                     "AC (G)": ac / 1e9, "energy (mJ)": joules * 1e3})
        print(rows[-1], flush=True)
    order = {"penalty": 0, "mask + penalty": 1, "mask": 2}
    rows.sort(key=lambda r: (order[r["kind"]], -r["AC (G)"]))
    name = "spike_pareto" if args.timesteps == 6 else f"spike_pareto_t{args.timesteps}"
    write(name, rows, {"timesteps": args.timesteps, "eval_tokens": args.eval_tokens})
    plot(rows, OUT / f"{name}.png")


if __name__ == "__main__":
    main()
