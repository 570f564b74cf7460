"""Zero-shot accuracy of SmolLM2-135M, ANN (`hf`) vs spiking (`spiking-hf`), on the offline multiple-choice
task `spiking_enwiki_cloze` (held-out enwiki-excerpt sentences, the true next sentence among distractors),
through lm-eval's own evaluator; spiking checkpoints converted here at each T with the default recipe.
    python bench/accuracy.py [--timesteps 6 8] [--limit 200]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import lm_eval
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

import spiking_lm_plugin as slm
from spiking_lm_plugin.assets import resolve_model
from spiking_lm_plugin.tasks_location import tasks_dir
from spiking_lm_plugin.lm_eval_model import SpikingHFLM

from _common import load, timed, write

TASK = "spiking_enwiki_cloze"


def evaluate(lm, limit: int | None) -> dict:
    out = lm_eval.simple_evaluate(model=lm, tasks=[TASK], limit=limit,
                                  task_manager=TaskManager(include_path=str(tasks_dir())))
    res = out["results"][TASK]
    return {"acc": res["acc,none"], "acc stderr": res["acc_stderr,none"], "acc_norm": res["acc_norm,none"],
            "n": int(out["n-samples"][TASK]["effective"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[6, 8])
    parser.add_argument("--limit", type=int, default=None, help="documents per run (default: all)")
    args = parser.parse_args()
    path = resolve_model("smollm2-135m")
    scores, seconds = timed(evaluate, HFLM(pretrained=path, device="cpu", dtype="float32"), args.limit)
    rows = [{"model": "ANN (hf)", "T": "-", **scores, "eval s": seconds}]
    print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for T in args.timesteps:
            model, tokenizer = load()
            slm.convert(model, slm.SpikingConfig(timesteps=T), tokenizer=tokenizer, base_model=path,
                        show_progress=False)
            ckpt = slm.save(model, Path(tmp) / f"t{T}")
            scores, seconds = timed(evaluate, SpikingHFLM(pretrained=path, spiking=str(ckpt), device="cpu"),
                                    args.limit)
            rows.append({"model": "spiking-hf fused", "T": T, **scores, "eval s": seconds})
            print(rows[-1], flush=True)
    for row in rows:
        row["acc vs ANN"] = row["acc"] - rows[0]["acc"]
    write("accuracy", rows, {"task": TASK, "limit": args.limit})


if __name__ == "__main__":
    main()
