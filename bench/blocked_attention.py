"""The spiking executions' attention a block of query rows at a time against the whole map (docs/DESIGN.md,
"Two executions, one function"), as ratios measured in one run. SmolLM2-135M is converted once (2k-token
calibration); every execution runs with the blocks and with a no-op hook on each softmax site, which makes
the attention build the whole map (the path before the blocks); the variants run in turn, each row the
median of ``--rounds`` rounds, against the ANN on the same tokens.
    python bench/blocked_attention.py [--lengths 512 2048] [--timestep-length 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse

import torch

import spiking_lm_plugin as slm
from spiking_lm_plugin.modules.attention import whole_maps

from _common import eval_windows, interleaved_medians, load, write


def rows_for(model, windows: torch.Tensor, executions: list[tuple[str, str, bool]], rounds: int) -> list[dict]:
    """One row per execution: seconds with the whole map and with the blocks (the ANN timed in the same rounds)."""
    tokens = f"{windows.shape[0]} x {windows.shape[1]}"
    blocked = interleaved_medians(model, {"ann": (windows, "ann", False),
                                          **{name: (windows, mode, metered) for name, mode, metered in executions}},
                                  rounds)
    with whole_maps(model):
        whole = interleaved_medians(model, {name: (windows, mode, metered) for name, mode, metered in executions},
                                    rounds)
    return [{"tokens": tokens, "execution": name, "whole map (s)": whole[name], "blocks (s)": blocked[name],
             "whole map / ANN": whole[name] / blocked["ann"], "blocks / ANN": blocked[name] / blocked["ann"],
             "speed-up": whole[name] / blocked[name]} for name, _, _ in executions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048], help="sequence lengths (fused)")
    parser.add_argument("--timestep-length", type=int, default=1024, help="sequence length of the timestep rows")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model, tokenizer = load(device=args.device)
    slm.convert(model, slm.SpikingConfig(calibration_tokens=2048), tokenizer=tokenizer, show_progress=False)
    fused = [("fused", "fused", False), ("fused metered", "fused", True)]
    timestep = [("timestep", "timestep", False), ("timestep metered", "timestep", True)]
    rows = []
    for length in args.lengths:
        rows += rows_for(model, eval_windows(tokenizer, length, length).to(args.device), fused, args.rounds)
    length = args.timestep_length
    rows += rows_for(model, eval_windows(tokenizer, length, length).to(args.device), timestep, args.rounds)
    write("blocked_attention", rows, {"device": args.device, "rounds": args.rounds, "calibration_tokens": 2048})


if __name__ == "__main__":
    main()
