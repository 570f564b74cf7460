"""The ``spiking-lm`` command: convert, inspect, fetch assets, locate the task YAML, run the demo."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .recipe_flags import NON_NEGATIVE, POSITIVE, add_recipe_flags, recipe_from_args
from .tasks_location import tasks_dir


def _summary_table(state, title: str):
    from rich.table import Table

    from .sites import site_type

    fit = state.fit
    table = Table(title=title)
    mixed = state.config.mixed_timesteps
    for col in ("site type", *(("T",) if mixed else ()), "sites", "rel. MSE (ours)", "rel. MSE (binary)", "firing rate"):
        table.add_column(col, justify="right" if col != "site type" else "left")
    by_type: dict[str, list[int]] = {}
    for i, name in enumerate(state.site_names):
        by_type.setdefault(site_type(name), []).append(i)
    mean = lambda key, idx: sum(fit[key][i] for i in idx) / len(idx)  # noqa: E731
    for kind, idx in by_type.items():
        steps = (str(state.config.timesteps_of(kind)),) if mixed else ()
        table.add_row(kind, *steps, str(len(idx)), f"{mean('site_loss', idx):.3e}", f"{mean('site_loss_binary', idx):.3e}",
                      f"{mean('site_spike_rate', idx):.3f}")
    table.caption = (f"calibration {fit['calibration_tokens']:,} tokens in {fit['calibrate_s']:.1f}s, "
                     f"fit {len(state.site_names)} sites in {fit['fit_s']:.1f}s")
    return table


def cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoint_files import check_output_path

    config = recipe_from_args(args)
    out = check_output_path(args.out, args.overwrite)      # before minutes of loading and fitting
    if config.weight_recipe is not None:
        import importlib.util

        if importlib.util.find_spec("torchao") is None:
            from .weight_recipe import TORCHAO_MISSING

            raise ValueError(TORCHAO_MISSING)
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
    console.print(_summary_table(state, f"spiking-lm convert {args.model} T={config.timesteps} -> {out}"))
    layerwise = state.fit.get("layerwise", {}).get("seconds")
    console.print(f"load {load_s:.1f}s, calibrate {state.fit['calibrate_s']:.1f}s, fit {state.fit['fit_s']:.1f}s, "
                  + (f"layer-wise {layerwise:.1f}s, " if layerwise is not None else "") + f"save {save_s:.2f}s")
    for size, transform in state.fit.get("online_transforms", {}).items():
        console.print(f"down_proj input {size}: {transform}")
    if state.weights:
        from .weight_recipe import WeightRecipe

        console.print(f"decoder linears quantized to {WeightRecipe.from_record(state.weights).describe()} by "
                      f"{state.weights['library']} {state.weights['version']} before calibration")
    if state.prefix:
        console.print(f"prefix tokens {state.prefix} (their KV is computed once and every input runs after it)")
    left_out = state.fit.get("outlier_tokens_left_out")
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
    summary["weights"] = meta.get("weights") or "as loaded (not quantized)"
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


def cmd_tasks_dir(args: argparse.Namespace) -> int:
    print(tasks_dir())
    return 0


def cmd_energy(args: argparse.Namespace) -> int:
    from .baseline_energy import ann_baseline
    from .energy import EnergyConstants

    report = ann_baseline(args.model, args.tokens, args.convention, EnergyConstants(read_write=True))
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ANN energy of one {report['tokens']}-token sample ({args.model}, {args.convention} convention)")
    for column in ("quantity", "value"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for name, value in (("MAC (G)", f"{report['mac_g']:.2f}"), ("AC (G)", f"{report['ac_g']:.2f}"),
                        ("MAC & AC energy (J)", f"{report['energy_j']:.2f}"),
                        ("read/write energy (J)", f"{report['read_write_j']:.2f}"),
                        ("total (J)", f"{report['total_j']:.2f}")):
        table.add_row(name, value)
    Console().print(table)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .report import run_report

    mask = ... if args.spike_mask is None else (args.spike_mask or None)       # 0 switches the mask off
    s = run_report(args.model, args.checkpoint, args.out, args.tokens, spike_mask=mask,
                   convention=args.convention, device=args.device)
    table = Table(title=f"energy of one {s['tokens']}-token sample ({s['convention']} convention, read/write on)")
    for column in ("quantity", "spiking", "ANN"):
        table.add_column(column, justify="left" if column == "quantity" else "right")
    for name, snn, ann in (("MAC (G)", s["mac"] / 1e9, s["ann_mac"] / 1e9), ("AC (G)", s["ac"] / 1e9, 0.0),
                           ("MAC & AC (mJ)", s["compute_j"] * 1e3, s["ann_compute_j"] * 1e3),
                           ("neuron (mJ)", s["neuron_j"] * 1e3, 0.0),
                           ("read/write (mJ)", s["read_write_j"] * 1e3, s["ann_read_write_j"] * 1e3),
                           ("total (mJ)", s["energy_j"] * 1e3, s["ann_energy_j"] * 1e3)):
        table.add_row(name, f"{snn:.4g}", f"{ann:.4g}")
    table.add_row("firing rate per slot / per fan-out", f"{s['firing_rate']:.3f} / {s['firing_rate_fanout']:.3f}", "-")
    Console().print(table)
    print(args.out)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spiking-lm",
        description="Convert LLaMA-family LLMs (LLaMA, Qwen2/3, Mistral, Phi-3, OLMo-2, Gemma-2/3) into spiking LLMs with distribution-aware "
                    "multi-granularity phase coding, and evaluate them in lm-eval (`lm_eval --model spiking-hf`).")
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="calibrate, fit all neurons, write a checkpoint directory",
                       description="Convert a model with the recipe SpikingConfig: every flag below is one of "
                                   "its fields (unset flags keep the dataclass defaults shown).")
    c.add_argument("--model", default="smollm2-135m", help="alias (smollm2-135m), local HF folder, or hub id")
    c.add_argument("--out", required=True, help="checkpoint directory to write (atomically); refused if it is "
                   "a file or a non-empty directory that is not a checkpoint")
    c.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out (other "
                   "files there are kept)")
    add_recipe_flags(c)
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

    e = sub.add_parser("energy", help="the ANN baseline's MACs and joules from a model's config (no weights)",
                       description="Count one causal sample of --tokens tokens through the ANN on the meta device "
                                   "(no weights are loaded) with the same wrappers and cost models as every run. "
                                   "--convention paper prices it like the paper (eq. 18 and eq. 59: attention over "
                                   "the full L x S rectangle, read/write of weights and activations at linear "
                                   "layers); ours is this project's accounting (docs/DESIGN.md, Energy).")
    e.add_argument("--model", default="smollm2-135m", help="alias, HF folder, config.json path or hub id")
    e.add_argument("--tokens", type=POSITIVE, default=512, help="sample length (default 512)")
    e.add_argument("--convention", choices=["ours", "paper"], default="ours", help="cost model (default ours)")
    e.add_argument("--json", action="store_true", help="one JSON object: mac_g, ac_g, energy_j, read_write_j, ...")
    e.set_defaults(func=cmd_energy)

    r = sub.add_parser("report", help="a PNG of firing rate and AC share per layer x site, and the energy table",
                       description="Run one held-out sample through a checkpoint (fused, meter on) and write a "
                                   "PNG: firing rate per layer x site type, and each layer's ops' share of all ACs.")
    r.add_argument("checkpoint", help="checkpoint directory (spiking-lm convert --out)")
    r.add_argument("--model", default="smollm2-135m", help="the checkpoint's base model (alias, folder or hub id)")
    r.add_argument("--out", default="spiking-report.png", help="PNG to write (default spiking-report.png)")
    r.add_argument("--tokens", type=POSITIVE, default=512, help="sample length (default 512)")
    r.add_argument("--spike-mask", type=NON_NEGATIVE, default=None, help="override the checkpoint's early-spike mask "
                   "(0 = off)")
    r.add_argument("--convention", choices=["ours", "paper"], default="ours", help="cost model (default ours)")
    r.add_argument("--device", default="cpu")
    r.set_defaults(func=cmd_report)

    d = sub.add_parser("demo", help="the main job: convert the default model, evaluate ANN vs spiking in lm-eval",
                       description="Convert --model with the recipe flags (SpikingConfig fields, as for "
                                   "convert) through the Lightning trainer, then evaluate the ANN and the spiking "
                                   "model on held-out text in lm-eval.")
    d.add_argument("--model", default="smollm2-135m")
    d.add_argument("--eval-docs", type=int, default=8, help="evaluation documents (lm-eval --limit; default 8)")
    d.add_argument("--task", default="spiking_enwiki_ppl_short", help="default spiking_enwiki_ppl_short")
    d.add_argument("--out", default="outputs/demo", help="where the checkpoint and results go (outputs/demo)")
    d.add_argument("--device", default="cpu")
    add_recipe_flags(d)
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
