"""The recipe as command-line flags: every flag is a :class:`SpikingConfig` field (``fit.x``: a
:class:`FitConfig` field) whose default is read from the dataclass, so no front end repeats one.
Torch-free, so ``--help`` starts fast."""

from __future__ import annotations

import argparse


def _parse_allocation(text: str | None):
    if text in (None, "", "uniform"):
        return None
    if text == "search":
        return "search"
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--allocation must be 'uniform', 'search' or comma-separated steps per grain, "
                         f"got {text!r}") from None


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (refused by argparse itself, before any import)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


POSITIVE = _int_at_least(1)
NON_NEGATIVE = _int_at_least(0)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _parse_prefix(text: str):
    if text in ("auto", "none"):
        return text
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--prefix must be 'auto', 'none' or comma-separated token ids, got {text!r}") from None


def _parse_headroom(value: str) -> str | float:
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tau-headroom must be 'auto' or a number >= 1, got {value!r}") from None


def _parse_group_size(text: str) -> int | str:
    if text == "channel":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--weight-group-size must be an integer or 'channel', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--weight-group-size must be >= 1, got {value}")
    return value


def _parse_site_timesteps(text: str) -> dict[str, int] | None:
    if text in ("", "none"):
        return None
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--site-timesteps must be comma-separated TYPE=T pairs such as "
                                             f"softmax=8,gate_act=8, got {text!r}") from None
    return out


def _comma_sites(text: str) -> tuple[str, ...]:
    return tuple(text.split(","))


#: (flags, SpikingConfig field ("fit.x": a FitConfig field), add_argument options); defaults are read from
#: the dataclasses, so a recipe default lives in one place
RECIPE_FLAGS: list[tuple[tuple[str, ...], str, dict]] = [
    (("--timesteps", "-T"), "timesteps", {"type": POSITIVE, "help": "time steps T per neuron"}),
    (("--site-timesteps",), "site_timesteps", {
        "type": _parse_site_timesteps, "help": "per-site-type T overriding -T, e.g. softmax=8,gate_act=8,up=8: "
        "more steps where the coding error is made (docs/BENCHMARKS.md, fewer timesteps), the others keep T"}),
    (("--grains",), "grains", {"type": POSITIVE, "help": "number of grains (bases) n <= T"}),
    (("--neuron",), "neuron", {"help": "preset: multi-grain, single-grain, binary, tied, two-spike, rate, ttfs, "
                                       "integer, oat"}),
    (("--allocation",), "allocation", {"type": _parse_allocation,
                                       "help": "'uniform', 'search' (Alg. 2) or steps per grain, e.g. 2,6"}),
    (("--tau",), "tau", {"choices": ["channel", "tensor"], "help": "scale granularity at sites feeding a linear"}),
    (("--tau-headroom",), "tau_headroom", {
        "type": _parse_headroom, "help": "tau = headroom x the calibration maximum at the sites where held-out "
        "values above it dominated the error; 1 = the paper's tau = max; auto = 1.5 for T >= 8, else 1"}),
    (("--no-rope-pair-tau",), "rope_pair_tau", {
        "action": "store_false", "help": "calibrate each q/k channel's tau on its own instead of one tau per RoPE "
        "pair (the pair's norm moves between its channels with the position: longer text clips the small one)"}),
    (("--sample-weighting",), "sample_weighting", {
        "type": _non_negative_float, "help": "alpha of the output-aware samples: each channel's fitting samples "
        "are drawn with probability (tau^2 x its output gain)^alpha, so the fit spends the neuron's resolution "
        "where the block output error is made; 0 = uniform (the paper's)"}),
    (("--rotation",), "rotation", {"choices": ["none", "online", "full"], "help": "online: exact Hadamard "
        "transform of the down_proj input, folded into its weight; full: also rotate the residual stream"}),
    (("--online-transform",), "online_transform", {
        "choices": ["auto", "hadamard", "random"], "help": "the down_proj input transform: auto = a Hadamard "
        "where one is constructible for the size, else an exact seeded orthogonal Kronecker transform; "
        "random = that fallback at every size (to measure it)"}),
    (("--prefix",), "prefix", {"type": _parse_prefix, "help": "prefixed outlier tokens (PrefixQuant): 'auto' "
                               "(chosen on calibration data), 'none', or comma-separated token ids"}),
    (("--prefix-eta",), "prefix_eta", {"type": float,
                                       "help": "outlier token: max|x| at a down_proj input above eta x the median"}),
    (("--keep-outlier-tokens",), "exclude_outlier_tokens", {
        "action": "store_false", "help": "with a prefix, still calibrate on the rare tokens that stay outliers "
        "after it (by default they are left out, so they do not set every tau of the later layers)"}),
    (("--layerwise",), "layerwise", {"action": "store_true", "help": "after the per-site fit, tune each "
        "block's tau and threshold offsets against the ANN block's output (slower)"}),
    (("--layerwise-windows",), "layerwise.windows", {"type": POSITIVE,
        "help": "calibration windows the blocks are tuned on (with --layerwise; default LayerwiseConfig's)"}),
    (("--bias-correction",), "bias_correction", {"action": "store_true", "help": "after the fit, give each "
        "linear layer's input site its mean coding error back as a bias (measured on calibration windows)"}),
    (("--sites",), "sites", {"type": _comma_sites, "help": "comma list of site types"}),
    (("--calibration-text",), "calibration_text", {"help": "text asset for calibration"}),
    (("--calibration-tokens",), "calibration_tokens", {"type": POSITIVE}),
    (("--sequence-length",), "sequence_length", {"type": POSITIVE}),
    (("--batch-size",), "batch_size", {"type": POSITIVE}),
    (("--samples-per-site",), "samples_per_site", {"type": POSITIVE}),
    (("--search-steps",), "search_steps", {"type": POSITIVE, "help": "Alg. 2 steps (with --allocation search)"}),
    (("--rounds",), "fit.rounds", {"type": POSITIVE, "help": "rounds N; each ends by keeping every site's best"}),
    (("--threshold-steps",), "fit.threshold_steps", {"type": NON_NEGATIVE,
                                                     "help": "N1: steps per round on theta/h (joint: part of it)"}),
    (("--base-steps",), "fit.base_steps", {"type": NON_NEGATIVE,
                                           "help": "N2: steps per round on the bases (joint: part of it)"}),
    (("--spike-mask",), "spike_mask", {"type": POSITIVE, "help": "early-spike mask (paper Appendix D.7): every "
        "neuron but the softmax map's keeps only its first K spikes per value (the released code: 2); off by "
        "default; evaluation can switch it with spiking-hf's spike_mask="}),
    (("--mask-in-fit",), "mask_in_fit", {"action": "store_true", "help": "with --spike-mask, fit the neurons "
        "with the mask inside their dynamics (their thresholds learn that only K spikes come) instead of "
        "masking neurons fitted without it"}),
    (("--no-mass-correction",), "mass_correction", {"action": "store_false", "help": "leave out the attention "
        "mass correction (on by default: each attention row gets the mass its softmax neurons round away, 1 - the "
        "spiked row's sum, times the mean spiked value of the keys it may attend to; it matters most at T <= 6 "
        "and on windows longer than the calibration's)"}),
    (("--spike-penalty",), "fit.spike_penalty", {"type": float, "help": "lambda of the energy-aware fit: "
        "coding error + lambda x each site's fan-out-weighted firing rate (0 = the paper's objective)"}),
    (("--weight-bits",), "weight_bits", {"type": int, "choices": [16, 8, 4], "help": "quantize the decoder "
        "linears to 8 or 4 bits with torchao after the rotation and before calibration (paper Table 8); 16 = the "
        "weights as loaded"}),
    (("--weight-group-size",), "weight_group_size", {"type": _parse_group_size, "help": "input channels per "
        "weight scale: an integer or 'channel' (one per output row); default: per row at 8 bits, 32 at 4"}),
    (("--seed",), "seed", {"type": int, "help": "seed of the calibration sampling and the fitting minibatches"}),
]


def _recipe_defaults() -> dict:
    """Field -> default of SpikingConfig and (as ``fit.x``) FitConfig, read without instantiating them."""
    from dataclasses import MISSING, fields

    from .config import SpikingConfig
    from .fitting.fit_config import FitConfig
    from .layerwise_config import LayerwiseConfig

    out = {f.name: f.default for f in fields(SpikingConfig) if f.default is not MISSING}
    out.update({f"fit.{f.name}": f.default for f in fields(FitConfig)})
    out.update({f"layerwise.{f.name}": f.default for f in fields(LayerwiseConfig)})
    return out


def add_recipe_flags(parser: argparse.ArgumentParser) -> None:
    """The SpikingConfig fields as flags; unset flags stay out of the namespace (the dataclass decides)."""
    defaults = _recipe_defaults()
    for flags, dest, options in RECIPE_FLAGS:
        shown = defaults.get(dest)
        if isinstance(shown, tuple):
            shown = ",".join(map(str, shown))
        if options.get("action") in ("store_true", "store_false"):
            note = ""
        else:
            note = f" (default: {'uniform' if dest == 'allocation' and shown is None else shown})"
        if "action" not in options and "choices" not in options:
            options = {**options, "metavar": dest.rsplit(".", 1)[-1].upper()}
        parser.add_argument(*flags, dest=dest, default=argparse.SUPPRESS,
                            **{**options, "help": (options.get("help", "") + note).strip()})
    schedule = parser.add_mutually_exclusive_group()
    schedule.add_argument("--joint", dest="fit.joint", action="store_true", default=argparse.SUPPRESS,
                          help="update theta, h and B together at every step" +
                               (" (the default)" if defaults["fit.joint"] else ""))
    schedule.add_argument("--alternating", dest="fit.joint", action="store_false", default=argparse.SUPPRESS,
                          help="the paper's Alg. 1: N1 steps on theta/h, then N2 on the bases, per round" +
                               ("" if defaults["fit.joint"] else " (the default)"))


def recipe_from_args(args: argparse.Namespace):
    """The SpikingConfig of the recipe flags given (every flag not given keeps the dataclass default)."""
    from .config import SpikingConfig
    from .fitting.fit_config import FitConfig

    dests = [dest for _, dest, _ in RECIPE_FLAGS] + ["fit.joint"]
    given = {dest: getattr(args, dest) for dest in dests if hasattr(args, dest)}
    fit = {k.split(".", 1)[1]: v for k, v in given.items() if k.startswith("fit.")}
    recipe = {k: v for k, v in given.items() if not k.startswith("fit.") and not k.startswith("layerwise.")}
    if "seed" in recipe:
        fit.setdefault("seed", recipe["seed"])          # one --seed drives the calibration and the fit
    if recipe.pop("layerwise", False):
        from .layerwise_config import LayerwiseConfig

        windows = given.get("layerwise.windows")
        recipe["layerwise"] = LayerwiseConfig(**({"windows": windows} if windows else {}))
    return SpikingConfig(**recipe, fit=FitConfig(**fit))
