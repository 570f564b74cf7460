"""lm-eval throughput on SmolLM2-135M: `hf` vs `spiking-hf` fused (energy meter on and off) vs timestep,
and fused on weight-quantized checkpoints (``--quantized``: each checkpoint's torchao W8 / W4 recipe), as
ratios measured in one run on the same documents.
    python bench/lm_eval_throughput.py --checkpoint DIR [--quantized DIR ...] [--docs 4] [--repeats 3] [--task T]

Every variant is loaded and warmed up first; then the variants run in turn, ``--repeats`` rounds, and each
row is the median of its rounds (these machines' speed drifts by tens of percent within minutes, so one
run per variant back to back measures the drift as much as the variant).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import lm_eval
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from spiking_lm_plugin.assets import resolve_model
from spiking_lm_plugin.tasks_location import tasks_dir
from spiking_lm_plugin.lm_eval_model import SpikingHFLM

from _common import OUT, write

TASK = "spiking_enwiki_ppl_short"


def run(lm, docs: int, task: str = TASK) -> tuple[float, float]:
    t0 = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=[task], limit=docs,
                                  task_manager=TaskManager(include_path=str(tasks_dir())))
    return time.perf_counter() - t0, out["results"][task]["word_perplexity,none"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--quantized", nargs="*", default=[], help="weight-quantized checkpoints (fused rows)")
    parser.add_argument("--docs", type=int, default=4)
    parser.add_argument("--task", default=TASK, help="a word-perplexity task (spiking_enwiki_ppl: whole documents, "
                                                     "long windows)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all variants; each row is its median")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", nargs="*", default=None,
                        help="recompute these rows only (hf is always rerun: ratios come from one run) and keep "
                             "the others of bench/results/lm_eval_throughput.json")
    args = parser.parse_args()
    path = resolve_model("smollm2-135m")
    variants = [
        ("hf", lambda: HFLM(pretrained=path, device=args.device, dtype="float32")),
        ("spiking-hf fused", lambda: SpikingHFLM(pretrained=path, spiking=args.checkpoint, device=args.device)),
        ("spiking-hf fused, energy off", lambda: SpikingHFLM(pretrained=path, spiking=args.checkpoint,
                                                             device=args.device, energy=False)),
        ("spiking-hf timestep", lambda: SpikingHFLM(pretrained=path, spiking=args.checkpoint, mode="timestep",
                                                    device=args.device)),
    ]
    for ckpt in args.quantized:
        bits = json.loads((Path(ckpt) / "spiking_config.json").read_text())["config"]["weight_bits"]
        variants.append((f"spiking-hf fused, W{bits}",
                         lambda ckpt=ckpt: SpikingHFLM(pretrained=path, spiking=ckpt, device=args.device)))
    chosen = [(label, make) for label, make in variants
              if not args.variants or label == "hf" or label in args.variants]
    models = {}
    for label, make in chosen:
        models[label] = make()
        run(models[label], 1, args.task)            # warm-up: kernel compilation, caches
    times: dict[str, list[float]] = {label: [] for label in models}
    perplexities = {}
    for _ in range(args.repeats):                   # interleaved, so a drift of the machine hits every variant
        for label, lm in models.items():
            seconds, perplexities[label] = run(lm, args.docs, args.task)
            times[label].append(seconds)
            print(label, round(seconds, 2), flush=True)
    rows = [{"model": label, "seconds": statistics.median(times[label]), "word ppl": perplexities[label],
             "runs (s)": " / ".join(f"{t:.1f}" for t in times[label])} for label in models]
    meta = {"task": args.task, "docs": args.docs, "repeats": args.repeats}
    previous = OUT / "lm_eval_throughput.json"
    if args.variants and previous.is_file():   # keep the other rows, each with the ratio of its own run
        fresh = {r["model"] for r in rows}
        kept = [{"runs (s)": "-", **r} for r in json.loads(previous.read_text())["rows"] if r["model"] not in fresh]
        for row in rows:
            row["throughput vs hf"] = rows[0]["seconds"] / row["seconds"]
        order = [label for label, _ in variants] + [r["model"] for r in kept]   # kept W8 / W4 rows go last
        rows = sorted(rows + kept, key=lambda r: order.index(r["model"]))
        meta.update(command=f"python bench/lm_eval_throughput.py --checkpoint {args.checkpoint}",
                    rows_refreshed=args.variants)
    else:
        for row in rows:
            row["throughput vs hf"] = rows[0]["seconds"] / row["seconds"]
    write("lm_eval_throughput", rows, meta)


if __name__ == "__main__":
    main()
