"""The ``spiking-lm`` command: convert, inspect, fetch assets, locate the task YAML, run the demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .sites import ALL_SITE_TYPES


def _parse_allocation(text: str | None):
    if text in (None, "", "uniform"):
        return None
    if text == "search":
        return "search"
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--allocation must be 'uniform', 'search' or comma-separated steps per grain, "
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


def _parse_prefix(text: str):
    if text in ("auto", "none"):
        return text
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--prefix must be 'auto', 'none' or comma-separated token ids, got {text!r}") from None


def _summary_table(state, title: str):
    from rich.table import Table

    from .sites import site_type

    fit = state.fit
    table = Table(title=title)
    for col in ("site type", "sites", "rel. MSE (ours)", "rel. MSE (binary)", "firing rate"):
        table.add_column(col, justify="right" if col != "site type" else "left")
    by_type: dict[str, list[int]] = {}
    for i, name in enumerate(state.site_names):
        by_type.setdefault(site_type(name), []).append(i)
    mean = lambda key, idx: sum(fit[key][i] for i in idx) / len(idx)  # noqa: E731
    for kind, idx in by_type.items():
        table.add_row(kind, str(len(idx)), f"{mean('site_loss', idx):.3e}", f"{mean('site_loss_binary', idx):.3e}",
                      f"{mean('site_spike_rate', idx):.3f}")
    table.caption = (f"calibration {fit['calibration_tokens']:,} tokens in {fit['calibrate_s']:.1f}s, "
                     f"fit {len(state.site_names)} sites in {fit['fit_s']:.1f}s")
    return table


def _parse_headroom(value: str) -> str | float:
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--tau-headroom must be 'auto' or a number >= 1, got {value!r}") from None


def cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoint_files import check_output_path
    from .config import SpikingConfig
    from .fitting.fit_config import FitConfig
    from .layerwise_config import LayerwiseConfig

    config = SpikingConfig(
        timesteps=args.timesteps, grains=args.grains, neuron=args.neuron, allocation=_parse_allocation(args.allocation),
        tau=args.tau, tau_headroom=_parse_headroom(args.tau_headroom), rotation=args.rotation,
        online_transform=args.online_transform,
        sites=tuple(args.sites.split(",")) if args.sites else ALL_SITE_TYPES,
        calibration_text=args.calibration_text, calibration_tokens=args.calibration_tokens,
        sequence_length=args.sequence_length, batch_size=args.batch_size, samples_per_site=args.samples_per_site,
        fit=FitConfig(rounds=args.rounds, threshold_steps=args.threshold_steps, base_steps=args.base_steps,
                      joint=args.joint, seed=args.seed),
        prefix=_parse_prefix(args.prefix), prefix_eta=args.prefix_eta,
        exclude_outlier_tokens=not args.keep_outlier_tokens,
        layerwise=LayerwiseConfig(windows=args.layerwise_windows) if args.layerwise else None,
        seed=args.seed,
    )
    out = check_output_path(args.out, args.overwrite)      # before minutes of loading and fitting
    from . import convert, save
    from .loading import load_base_model
    from .progress import console

    t0 = time.perf_counter()
    model, tokenizer, _ = load_base_model(args.model, args.device, args.dtype)
    load_s = time.perf_counter() - t0
    state = convert(model, config, tokenizer=tokenizer, base_model=args.model, show_progress=not args.quiet)
    state.fit["load_s"] = load_s
    t1 = time.perf_counter()
    save(model, out)
    save_s = time.perf_counter() - t1
    console.print(_summary_table(state, f"spiking-lm convert {args.model} T={args.timesteps} -> {out}"))
    layerwise = state.fit.get("layerwise", {}).get("seconds")
    console.print(f"load {load_s:.1f}s, calibrate {state.fit['calibrate_s']:.1f}s, fit {state.fit['fit_s']:.1f}s, "
                  + (f"layer-wise {layerwise:.1f}s, " if layerwise is not None else "") + f"save {save_s:.2f}s")
    for size, transform in state.fit.get("online_transforms", {}).items():
        console.print(f"down_proj input {size}: {transform}")
    if state.prefix:
        console.print(f"prefix tokens {state.prefix} (their KV is computed once and every input runs after it)")
    left_out = state.fit.get("prefix_search", {}).get("outlier_tokens_left_out")
    if left_out:
        console.print(f"{left_out} calibration token(s) still outliers after the prefix were left out of the "
                      "calibration samples (--keep-outlier-tokens keeps them)")
    print(out)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .checkpoint_files import read_meta, verify_tensors

    meta = read_meta(args.checkpoint)
    verify_tensors(args.checkpoint, meta)
    summary = {k: meta[k] for k in ("format_version", "base_model", "config", "neuron")}
    summary["sites"] = len(meta["sites"])
    summary["prefix"] = meta.get("prefix", {"tokens": []})
    summary["fit"] = {k: v for k, v in meta.get("fit", {}).items() if not isinstance(v, list)}
    summary["tensors"] = meta.get("tensors", {"verified": "against the file's own header"})
    print(json.dumps(summary, indent=1))
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from .assets import MODEL_ALIASES, TEXT_ALIASES, resolve_model, text_documents

    for name in args.assets or list(MODEL_ALIASES) + list(TEXT_ALIASES):
        if name in MODEL_ALIASES:
            print(f"{name}: {resolve_model(name)}")
        elif name in TEXT_ALIASES:
            print(f"{name}: {len(text_documents(name))} documents")
        else:
            raise ValueError(f"unknown asset {name!r}; choose from {sorted(MODEL_ALIASES) + sorted(TEXT_ALIASES)}")
    return 0


def tasks_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("spiking_lm_plugin.tasks")))


def cmd_tasks_dir(args: argparse.Namespace) -> int:
    print(tasks_dir())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    from .fitting.fit_config import FitConfig      # one source for the fitting defaults (torch-free)

    parser = argparse.ArgumentParser(
        prog="spiking-lm",
        description="Convert LLaMA-family LLMs (LLaMA, Qwen2, Mistral) into spiking LLMs with distribution-aware "
                    "multi-granularity phase coding, and evaluate them in lm-eval (`lm_eval --model spiking-hf`).")
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="calibrate, fit all neurons, write a checkpoint directory",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("--model", default="smollm2-135m", help="alias (smollm2-135m), local HF folder, or hub id")
    c.add_argument("--out", required=True, help="checkpoint directory to write (atomically); refused if it is "
                   "a file or a non-empty directory that is not a checkpoint")
    c.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out (other "
                   "files there are kept)")
    c.add_argument("--timesteps", "-T", type=POSITIVE, default=8, help="time steps T per neuron")
    c.add_argument("--grains", type=POSITIVE, default=2, help="number of grains (bases) n <= T")
    c.add_argument("--neuron", default="multi-grain", help="preset: multi-grain, single-grain, binary, tied, "
                   "two-spike, rate, ttfs, integer")
    c.add_argument("--allocation", default=None, help="'uniform', 'search' (Alg. 2) or steps per grain, e.g. 2,6")
    c.add_argument("--tau", default="channel", choices=["channel", "tensor"],
                   help="scale granularity at sites feeding a linear layer")
    c.add_argument("--tau-headroom", default="auto",
                   help="tau = headroom x the calibration maximum at the sites where held-out values above it "
                        "dominated the error; 1 = the paper's tau = max; auto = 1.5 for T >= 8, else 1")
    c.add_argument("--rotation", default="online", choices=["none", "online", "full"],
                   help="online: exact Hadamard transform of the down_proj input, folded into its weight; "
                        "full: also rotate the residual stream (RMSNorm weights folded)")
    c.add_argument("--online-transform", default="auto", choices=["auto", "hadamard", "random"],
                   help="the down_proj input transform: auto = a Hadamard where one is constructible for the "
                        "size, else an exact seeded orthogonal Kronecker transform; random = that fallback "
                        "at every size (to measure it)")
    c.add_argument("--prefix", default="auto",
                   help="prefixed outlier tokens (PrefixQuant): 'auto' (chosen on calibration data), 'none', or "
                        "comma-separated token ids")
    c.add_argument("--prefix-eta", type=float, default=64.0,
                   help="outlier token: max|x| at a down_proj input above eta x the median")
    c.add_argument("--keep-outlier-tokens", action="store_true",
                   help="with a prefix, still calibrate on the rare tokens that stay outliers after it (by "
                        "default they are left out, so they do not set every tau of the later layers)")
    c.add_argument("--layerwise", action="store_true",
                   help="after the per-site fit, tune each block's tau and threshold offsets against the ANN "
                        "block's output (slower)")
    c.add_argument("--layerwise-windows", type=POSITIVE, default=2,
                   help="calibration windows the blocks are tuned on (with --layerwise)")
    c.add_argument("--sites", default=None, help=f"comma list of site types (default all: {','.join(ALL_SITE_TYPES)})")
    c.add_argument("--calibration-text", default="enwiki-excerpt", help="text asset for calibration")
    c.add_argument("--calibration-tokens", type=POSITIVE, default=16384)
    c.add_argument("--sequence-length", type=POSITIVE, default=512)
    c.add_argument("--batch-size", type=POSITIVE, default=4)
    c.add_argument("--samples-per-site", type=POSITIVE, default=16384)
    c.add_argument("--rounds", type=POSITIVE, default=FitConfig.rounds,
                   help="rounds N; each ends by keeping every site's best parameters")
    c.add_argument("--threshold-steps", type=NON_NEGATIVE, default=FitConfig.threshold_steps,
                   help="N1: steps per round on theta/h (Alg. 1; joint: part of the round)")
    c.add_argument("--base-steps", type=NON_NEGATIVE, default=FitConfig.base_steps,
                   help="N2: steps per round on the bases (Alg. 1; joint: part of the round)")
    schedule = c.add_mutually_exclusive_group()
    schedule.add_argument("--joint", dest="joint", action="store_true",
                          help="update theta, h and B together at every step (the default)")
    schedule.add_argument("--alternating", dest="joint", action="store_false",
                          help="the paper's Alg. 1: N1 steps on theta/h, then N2 on the bases, per round")
    c.set_defaults(joint=FitConfig.joint)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default="cpu")
    c.add_argument("--dtype", default="float32")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=cmd_convert)

    i = sub.add_parser("info", help="print a checkpoint's metadata after verifying its tensor file "
                       "(size and sha256); exit 2 if it is not whole")
    i.add_argument("checkpoint")
    i.set_defaults(func=cmd_info)

    f = sub.add_parser("fetch", help="download, verify and cache the offline assets")
    f.add_argument("assets", nargs="*", help="aliases (default: all)")
    f.set_defaults(func=cmd_fetch)

    t = sub.add_parser("tasks-dir", help="print the directory of the packaged lm-eval tasks (for --include_path)")
    t.set_defaults(func=cmd_tasks_dir)

    d = sub.add_parser("demo", help="the main job: convert the default model, evaluate ANN vs spiking in lm-eval",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("--model", default="smollm2-135m")
    d.add_argument("--timesteps", "-T", type=int, default=8)
    d.add_argument("--grains", type=int, default=2)
    d.add_argument("--calibration-tokens", type=int, default=16384)
    d.add_argument("--eval-docs", type=int, default=8, help="evaluation documents (lm-eval --limit)")
    d.add_argument("--task", default="spiking_enwiki_ppl_short")
    d.add_argument("--out", default="outputs/demo", help="where the checkpoint and results go")
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:       # bad input, unwritable paths, corrupt files: one line
        detail = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.strerror else exc
        print(f"spiking-lm {args.command}: error: {detail}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
