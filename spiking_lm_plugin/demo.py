"""The main job (`spiking-lm demo`): convert the default model with the Lightning trainer, evaluate the ANN
and the spiking model on the same held-out text through lm-eval, print one table, write the results."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _evaluate(model_args: dict, task: str, limit: int | None) -> tuple[dict, dict, float]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from .tasks_location import tasks_dir
    from .lm_eval_model import SpikingHFLM

    lm = SpikingHFLM(**model_args)
    t0 = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=[task], limit=limit,
                                  task_manager=TaskManager(include_path=str(tasks_dir())))
    return out["results"][task], lm.energy_report(), time.perf_counter() - t0


def _fit(args: argparse.Namespace, recipe, out: Path) -> tuple[Path, dict]:
    import pytorch_lightning as pl

    from lightning_modules import (ActivationDataModule, BaseLoggingCallback, CheckpointExportCallback,
                                   NeuronFitModule, PhaseSwitchCallback)

    ckpt = out / "checkpoint"
    t0 = time.perf_counter()
    dm = ActivationDataModule(model=args.model, spiking=recipe, device=args.device)
    dm.setup("fit")
    calibrate_s = time.perf_counter() - t0
    module = NeuronFitModule(recipe)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu" if args.device == "cpu" else "auto", devices=1,
                         logger=pl.loggers.CSVLogger(str(out), name="fit"), enable_checkpointing=False,
                         callbacks=[PhaseSwitchCallback(), BaseLoggingCallback(str(out)),
                                    CheckpointExportCallback(str(ckpt)), pl.callbacks.RichProgressBar()])
    t1 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    timings = {"calibrate_s": calibrate_s, "activation_cache_hit": dm.cache_hit,
               "fit_s": time.perf_counter() - t1, "conversion_s": time.perf_counter() - t0}
    return ckpt, timings


def run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from .recipe_flags import recipe_from_args

    recipe = recipe_from_args(args)               # one SpikingConfig for the data module and the module
    console.rule(f"[bold]spiking-lm demo: {args.model}, T={recipe.timesteps}, {recipe.grains} grains")
    ckpt, timings = _fit(args, recipe, out)
    limit = args.eval_docs if args.eval_docs > 0 else None
    common = {"pretrained": args.model, "device": args.device}
    ann, ann_energy, ann_s = _evaluate({**common, "spiking": "none"}, args.task, limit)
    ref, _, ref_s = _evaluate({**common, "spiking": str(ckpt), "mode": "analog"}, args.task, limit)
    snn, snn_energy, snn_s = _evaluate({**common, "spiking": str(ckpt)}, args.task, limit)

    table = Table(title=f"ANN vs spiking ({args.task}, {limit or 'all'} documents, {snn_energy['tokens']:,} tokens)",
                  caption="analog reference: the converted model's prefix and rotation with every site analog "
                          "(what the neurons alone change is spiking vs this column)")
    for col in ("", "ANN", "analog reference", f"spiking T={recipe.timesteps}"):
        table.add_column(col, justify="right")
    ppl_a, ppl_r, ppl_s = (r["word_perplexity,none"] for r in (ann, ref, snn))
    rows = [
        ("word perplexity", f"{ppl_a:.3f}", f"{ppl_r:.3f} ({ppl_r / ppl_a - 1:+.1%})",
         f"{ppl_s:.3f} ({ppl_s / ppl_a - 1:+.1%} vs ANN, {ppl_s / ppl_r - 1:+.1%} vs analog)"),
        ("bits per byte", f"{ann['bits_per_byte,none']:.4f}", f"{ref['bits_per_byte,none']:.4f}",
         f"{snn['bits_per_byte,none']:.4f}"),
        ("conversion time (calibrate + fit)", "-", "-", f"{timings['conversion_s']:.1f} s"),
        ("firing rate", "-", "-", f"{snn_energy['firing_rate']:.4f}"),
        ("MAC / token", f"{ann_energy['mac_per_token']:.4g}", "-", f"{snn_energy['mac_per_token']:.4g}"),
        ("AC / token", f"{ann_energy['ac_per_token']:.4g}", "-", f"{snn_energy['ac_per_token']:.4g}"),
        ("energy / token (uJ)", f"{ann_energy['energy_j_per_token'] * 1e6:.4g}", "-",
         f"{snn_energy['energy_j_per_token'] * 1e6:.4g}"),
        ("energy saving vs ANN", "-", "-",
         f"{1 - snn_energy['energy_j_per_token'] / ann_energy['energy_j_per_token']:.1%}"),
        ("lm-eval time", f"{ann_s:.1f} s", f"{ref_s:.1f} s", f"{snn_s:.1f} s"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    summary = {"model": args.model, "recipe": recipe.to_dict(), "task": args.task,
               "limit": limit, "checkpoint": str(ckpt), "timings": timings,
               "ann": {"results": ann, "energy": ann_energy, "eval_s": ann_s},
               "analog_reference": {"results": ref, "eval_s": ref_s},
               "spiking": {"results": snn, "energy": snn_energy, "eval_s": snn_s}}
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    console.print(f"results: {out / 'results.json'}   figure 4: {out / 'figure4.png'}   checkpoint: {ckpt}")
    return 0
