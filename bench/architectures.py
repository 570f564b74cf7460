"""What each supported decoder family's features cost: one shape for all (hidden 256, intermediate 512,
4 layers, 4 heads / 2 kv heads, random weights from its transformers config class), the default recipe
fitted on random tokens, energy per token from the meter and the fused / ANN forward time in one run.
    python bench/architectures.py"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import spiking_lm_plugin as slm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_architectures import FAMILIES, family_model  # noqa: E402

from _common import write  # noqa: E402

SHAPE = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, head_dim=64, query_pre_attn_scalar=64, vocab_size=4096)


def forward_s(model, ids, repeats: int = 3) -> float:
    with torch.no_grad():
        model(ids[:1])
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(ids)
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    calib = torch.randint(0, SHAPE["vocab_size"], (16, 128), generator=gen)
    ids = torch.randint(0, SHAPE["vocab_size"], (4, 128), generator=gen)
    config = slm.SpikingConfig(timesteps=8, calibration_tokens=calib.numel(), samples_per_site=4096,
                               prefix="none")
    rows = []
    for name in FAMILIES:
        extra = {k: v for k, v in SHAPE.items() if k not in ("head_dim", "query_pre_attn_scalar")
                 or name in ("qwen3", "gemma2", "gemma3")}
        model = family_model(name, **extra)
        slm.convert(model, config, calibration=calib, show_progress=False)
        times, meters = {}, {}
        for mode in ("ann", "fused"):
            meters[mode] = slm.EnergyMeter()
            with torch.no_grad(), model.spiking.use(mode=mode, meter=meters[mode]):
                model(ids)
            with model.spiking.use(mode=mode):
                times[mode] = forward_s(model, ids)
        spk, ann = meters["fused"].summary(), meters["ann"].summary()
        rows.append({"family": name, "model_type": model.config.model_type,
                     "energy uJ/token": spk["energy_j_per_token"] * 1e6,
                     "ANN uJ/token": ann["energy_j_per_token"] * 1e6,
                     "saving": f"{1 - spk['energy_j'] / ann['energy_j']:.1%}",
                     "firing rate": spk["firing_rate"], "fused / ANN time": times["fused"] / times["ann"]})
    write("architectures", rows, {"shape": SHAPE, "tokens": ids.numel()})


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()   # --help explains; no options
    main()
