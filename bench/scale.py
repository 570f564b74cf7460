"""Conversion cost vs model size on random-weight LLaMA configs (CPU): calibration forward vs fitting
time and peak memory, how each grows with the model.
    python bench/scale.py [--sizes 1M 10M 50M 150M 400M 1.1B] [--tokens 4096]
"""

from __future__ import annotations

import argparse
import resource

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import spiking_lm_plugin as slm

from _common import write

SIZES = {  # hidden, intermediate (sizes with a Hadamard construction: the default recipe rotates), layers, heads
    "1M": (64, 192, 2, 4),
    "10M": (256, 768, 4, 4),
    "50M": (512, 1536, 8, 8),
    "150M": (768, 2048, 12, 12),
    "400M": (1024, 4096, 24, 16),
    "1.1B": (2048, 8192, 16, 16),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--tokens", type=int, default=4096)
    args = parser.parse_args()
    rows = []
    for name in args.sizes:
        hidden, inter, layers, heads = SIZES[name]
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=inter,
                                             num_hidden_layers=layers, num_attention_heads=heads,
                                             num_key_value_heads=heads)).eval()
        params = sum(p.numel() for p in model.parameters())
        calibration = torch.randint(0, 32000, (args.tokens // 512, 512))
        state = slm.convert(model, slm.SpikingConfig(), calibration=calibration, show_progress=False)
        rows.append({"config": name, "params (M)": params / 1e6, "sites": len(state.site_names),
                     "calibrate (s)": state.fit["calibrate_s"], "fit (s)": state.fit["fit_s"],
                     "peak RSS (GB)": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6})
        print(rows[-1], flush=True)
    write("scale", rows, {"calibration_tokens": args.tokens})


if __name__ == "__main__":
    main()
