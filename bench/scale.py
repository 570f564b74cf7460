"""Conversion cost vs model size on random-weight LLaMA configs (CPU): calibration forward vs fitting
time and peak memory, how each grows with the model. ``--dtype bfloat16 --sizes 7B --tokens 1024``: the
LLaMA-2-7B shape in bf16 (table ``scale_bfloat16``), peak RSS against the weights' bytes; run one size per
process there, so the peak is that size's.
    python bench/scale.py [--sizes 1M 10M 50M 150M 400M 1.1B] [--tokens 4096] [--dtype float32]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

import spiking_lm_plugin as slm  # first: its import quiets torchao's load-time log lines
from transformers import LlamaConfig, LlamaForCausalLM

from _common import write

SIZES = {  # hidden, intermediate (sizes with a Hadamard construction: the default recipe rotates), layers, heads
    "1M": (64, 192, 2, 4),
    "10M": (256, 768, 4, 4),
    "50M": (512, 1536, 8, 8),
    "150M": (768, 2048, 12, 12),
    "400M": (1024, 4096, 24, 16),
    "1.1B": (2048, 8192, 16, 16),
    "7B": (4096, 11008, 32, 32),      # LLaMA-2-7B
}


def random_llama(hidden: int, inter: int, layers: int, heads: int, dtype: torch.dtype) -> LlamaForCausalLM:
    """A random-weight LLaMA built directly in ``dtype`` (no float32 copy on the way)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads)
    return LlamaForCausalLM._from_config(config, dtype=dtype).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    rows = []
    for name in args.sizes:
        t0 = time.perf_counter()
        model = random_llama(*SIZES[name], dtype)
        build_s = time.perf_counter() - t0
        params = sum(p.numel() for p in model.parameters())
        weight_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
        calibration = torch.randint(0, 32000, (max(1, args.tokens // 512), min(512, args.tokens)))
        state = slm.convert(model, slm.SpikingConfig(), calibration=calibration, show_progress=False)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        rows.append({"config": name, "dtype": args.dtype, "params (M)": params / 1e6, "weights (GB)": weight_gb,
                     "sites": len(state.site_names), "build (s)": build_s, "calibrate (s)": state.fit["calibrate_s"],
                     "fit (s)": state.fit["fit_s"], "peak RSS (GB)": peak, "peak / weights": peak / weight_gb})
        print(rows[-1], flush=True)
    write("scale" if args.dtype == "float32" else f"scale_{args.dtype}", rows,
          {"calibration_tokens": args.tokens, "dtype": args.dtype})


if __name__ == "__main__":
    main()
