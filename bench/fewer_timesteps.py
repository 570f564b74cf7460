"""Fewer timesteps at the same quality: a uniform T against a T per site type chosen from measured sensitivity.

For each T below 8, every group of site types in turn gets T + bump steps (all other sites keep T) and the
perplexity on calibration-split windows (never the held-out text) and the ACs of one 512-token sample are
measured; groups are then taken greedily by perplexity gained per AC added while the model stays within the
AC budget (uniform T's ACs x (1 + slack)). A group is one site type, except the two factors of one product
(gate_act with up, q with k), which are bumped together: alone, one factor's extra steps meet the other's
coarser code in the product and the gain measured for it is mostly noise. The uniform and the chosen
recipe are fitted with several seeds and evaluated on held-out enwiki-excerpt and Botchan text against the
plain ANN and the analog reference, each fit also with the attention mass correction
(``mass_correction``: it changes no neuron, only the output).
    python bench/fewer_timesteps.py [--timesteps 4 5 6 8] [--seeds 0 1 2] [--bump 2] [--slack 0.05]
    python bench/fewer_timesteps.py --timesteps 5 --recipe 5:softmax=9,gate_act=7,up=7,k=7,q=7 --no-uniform
``--recipe`` evaluates a given per-site T instead of selecting one (repeatable; several per T allowed);
``--bias-correction`` evaluates every fit a second time with the bias correction; ``--sample-weighting 0 0.5``
fits every recipe once per output-aware sample exponent (``SpikingConfig.sample_weighting``);
``--rotation full`` converts with the residual stream rotated too (``SpikingConfig.rotation``);
``--mass-correction-only`` skips the rows without the attention mass correction; ``--layerwise`` evaluates
every fit again after the layer-wise stage (``SpikingConfig.layerwise``, its default ``LayerwiseConfig``, tuned
with the mass correction as the rows use it), and with ``--bias-correction`` the bias correction follows it as in
``convert``.
"""

from __future__ import annotations

import argparse
import statistics

import spiking_lm_plugin as slm
from spiking_lm_plugin.conversion import build_state, calibrate, correct_biases, fit, install, tune_layers
from spiking_lm_plugin.model_surgery import spiking_sites
from spiking_lm_plugin.sites import site_type

from _common import energy, held_out_texts, load, perplexity, write


def fitted_state(model, calib, config):
    c = calib.for_config(config)
    return build_state(config, c, fit(c.samples, config, False, c.site_names, c.fanouts), "smollm2-135m",
                       model.spiking.fingerprint, 0.0)


def override(model, state, types) -> None:
    """Install ``state``'s neurons at the sites of ``types`` only (the rest keep what is installed)."""
    sites, t = spiking_sites(model), state.neurons
    for i, name in enumerate(state.site_names):
        if site_type(name) in types:
            sites[name].set_neuron(t["d"][i], t["theta"][i], t["h"][i], t["v0"][i], state.taus[name],
                                   levels=state.spec.levels, max_spikes=state.spec.max_spikes)


PRODUCT_FACTORS = (("gate_act", "up"), ("k", "q"))


def type_groups(types: set[str]) -> list[tuple[str, ...]]:
    """The candidates of the selection: the factors of one product together, every other site type alone."""
    coupled = [g for g in PRODUCT_FACTORS if set(g) <= types]
    taken = {t for g in coupled for t in g}
    return sorted(coupled + [(t,) for t in types - taken])


def choose_types(model, calib, T: int, bump: int, slack: float, select, sample, sens_rows) -> dict[str, int]:
    """The site types that get T + bump steps: greedy by perplexity gained per AC added, within the budget."""
    low, high = (fitted_state(model, calib, slm.SpikingConfig(timesteps=t)) for t in (T, T + bump))
    install(model, low)
    with model.spiking.use(mode="fused"):
        base = perplexity(model, select)
    base_ac, _ = energy(model, sample)
    gains = []
    for kind in type_groups({site_type(n) for n in low.site_names}):
        install(model, low)
        override(model, high, kind)
        with model.spiking.use(mode="fused"):
            ppl = perplexity(model, select)
        ac, _ = energy(model, sample)
        gains.append((kind, base - ppl, ac - base_ac))
        sens_rows.append({"T": T, "site types": "+".join(kind), "steps": T + bump, "selection ppl": ppl,
                          "gain": (base - ppl) / base, "AC added": (ac - base_ac) / base_ac})
        print(sens_rows[-1], flush=True)
    chosen, spent = {}, 0.0
    for kind, gain, added in sorted(gains, key=lambda g: -g[1] / (max(g[2], 0.0) / base_ac + 0.01)):
        if gain > 0 and spent + max(added, 0.0) <= slack * base_ac:
            chosen.update({t: T + bump for t in kind})
            spent += max(added, 0.0)
    return chosen


def parse_recipe(text: str) -> tuple[int, dict[str, int]]:
    """``T:type=steps,type=steps`` -> (T, {type: steps})."""
    try:
        head, body = text.split(":", 1)
        return int(head), {k.strip(): int(v) for k, v in (item.split("=") for item in body.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected T:type=steps,type=steps, got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[4, 5, 6, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bump", type=int, default=2, help="extra steps a chosen site type gets")
    parser.add_argument("--slack", type=float, default=0.05, help="AC budget over the uniform T model")
    parser.add_argument("--eval-tokens", type=int, default=20480)
    parser.add_argument("--botchan-tokens", type=int, default=8192)
    parser.add_argument("--select-windows", type=int, default=16, help="calibration windows of the selection")
    parser.add_argument("--recipe", type=parse_recipe, action="append", default=[],
                        help="T:type=steps,...: evaluate this per-site T at T instead of selecting one")
    parser.add_argument("--no-uniform", action="store_true", help="skip the uniform-T rows")
    parser.add_argument("--no-mass-correction", action="store_true", help="skip the mass-corrected rows")
    parser.add_argument("--mass-correction-only", action="store_true", help="skip the rows without it")
    parser.add_argument("--sample-weighting", type=float, nargs="+", default=None,
                        help="fit every recipe once per output-aware sample exponent alpha (default: the config's)")
    parser.add_argument("--bias-correction", action="store_true",
                        help="evaluate every fit again with the bias correction (SpikingConfig.bias_correction)")
    parser.add_argument("--rotation", choices=("online", "full"), default=slm.SpikingConfig().rotation,
                        help="the rotation of every recipe (one calibration per run; the analog reference has it too)")
    parser.add_argument("--layerwise", action="store_true",
                        help="evaluate every fit again after the layer-wise stage (SpikingConfig.layerwise)")
    args = parser.parse_args()
    model, tokenizer = load()
    texts = held_out_texts(tokenizer, args.eval_tokens, args.botchan_tokens)
    ann = {k: perplexity(model, w) for k, w in texts.items()}
    # the largest alpha asked for, so the calibration keeps the channel gains (the reservoirs do not depend on it)
    calib = calibrate(model, slm.SpikingConfig(sample_weighting=max(args.sample_weighting or [0.0]),
                                               rotation=args.rotation), tokenizer=tokenizer)
    rotated = " + full rotation" if args.rotation == "full" else ""
    with model.spiking.use(mode="analog"):
        analog = {k: perplexity(model, w) for k, w in texts.items()}
    sample, select = texts["enwiki"][:1], calib.windows[: args.select_windows]
    print("ANN", ann, "analog", analog, flush=True)
    rows, sens_rows, runs = [], [], []
    for T in args.timesteps:
        recipes = {} if args.no_uniform else {"uniform": None}
        given = [steps for t, steps in args.recipe if t == T]
        for i, steps in enumerate(given):
            recipes["per-site T" + (f" ({i + 1})" if len(given) > 1 else "")] = steps
        if T < 8 and not given:
            chosen = choose_types(model, calib, T, args.bump, args.slack, select, sample, sens_rows)
            if chosen:
                recipes["per-site T"] = chosen
        alphas = args.sample_weighting or [slm.SpikingConfig().sample_weighting]
        for (label, steps), alpha in ((r, a) for r in recipes.items() for a in alphas):
            weighting = f" + output-aware samples ({alpha:g})" if alpha else ""
            for seed in args.seeds:
                config = slm.SpikingConfig(timesteps=T, site_timesteps=steps, fit=slm.FitConfig(seed=seed),
                                           sample_weighting=alpha, rotation=args.rotation,
                                           layerwise=slm.LayerwiseConfig() if args.layerwise else None)
                state = fitted_state(model, calib, config)
                install(model, state)
                masses = (False,) if args.no_mass_correction else (True,) if args.mass_correction_only else \
                    (False, True)
                # each stage applies to the fit as the previous one left it, in convert's order
                stages = [()]
                if args.layerwise:
                    stages.append(("layer-wise",))
                if args.bias_correction:
                    stages.append(stages[-1] + ("bias correction",))
                for done in stages:
                    if done and done[-1] == "layer-wise":
                        model.spiking.mass_correction = masses[-1]
                        tune_layers(model, state, calib.windows, show_progress=False)
                        print("layer-wise:", {k: state.fit["layerwise"][k] for k in
                                              ("accepted", "guard_nll_before", "guard_nll_after", "seconds")},
                              "blocks kept", sum(state.fit["layerwise"]["blocks_kept"]), flush=True)
                    elif done:
                        correct_biases(model, state, calib.windows)
                    for mass in masses:
                        model.spiking.mass_correction = mass
                        with model.spiking.use(mode="fused"):
                            ppl = {k: perplexity(model, w) for k, w in texts.items()}
                        ac, mj = energy(model, sample)
                        suffix = rotated + weighting + "".join(f" + {d}" for d in done) + \
                            (" + mass correction" if mass else "")
                        runs.append({"T": T, "recipe": label + suffix, "site T": steps or "-", "seed": seed,
                                     "AC (G)": ac / 1e9, "mJ/token": mj, **{f"{k} ppl": v for k, v in ppl.items()}})
                        print(runs[-1], flush=True)
                    model.spiking.mass_correction = False
    for (T, label) in dict.fromkeys((r["T"], r["recipe"]) for r in runs):
        group = [r for r in runs if r["T"] == T and r["recipe"] == label]
        row = {"T": T, "recipe": label, "site T": group[0]["site T"], "seeds": len(group)}
        for k in texts:
            rel = [r[f"{k} ppl"] / ann[k] - 1 for r in group]
            row[f"{k} ppl"] = statistics.mean(r[f"{k} ppl"] for r in group)
            row[f"{k} vs ANN"] = statistics.mean(rel)
            row[f"{k} vs analog"] = statistics.mean(r[f"{k} ppl"] / analog[k] - 1 for r in group)
            row[f"{k} seed std"] = statistics.stdev(rel) if len(rel) > 1 else 0.0
        row["AC (G)"] = statistics.mean(r["AC (G)"] for r in group)
        row["mJ/token"] = statistics.mean(r["mJ/token"] for r in group)
        rows.append(row)
    refs = [{"T": "-", "recipe": name, "site T": "-", "seeds": 0,
             **{f"{k} {c}": v for k in texts for c, v in (("ppl", ref[k]), ("vs ANN", ref[k] / ann[k] - 1),
                                                         ("vs analog", ref[k] / analog[k] - 1), ("seed std", 0.0))},
             "AC (G)": 0.0, "mJ/token": "-"} for name, ref in (("ANN", ann), ("analog reference", analog))]
    meta = {"eval_tokens": {k: int(w.numel()) for k, w in texts.items()}, "bump": args.bump, "slack": args.slack,
            "select_tokens": int(select.numel()), "runs": runs}
    write("fewer_timesteps", refs + rows, meta)
    if sens_rows:
        write("fewer_timesteps_sensitivity", sens_rows, {"select_tokens": int(select.numel())})


if __name__ == "__main__":
    main()
