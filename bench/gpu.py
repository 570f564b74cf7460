"""The GPU rows in one run: conversion at SmolLM2-135M's shape in fp32 and bf16 against one plain forward
over the same calibration tokens, forward time of the fused and time-stepped executions against the ANN,
the compiled site kernel against eager, the optional fast-hadamard-transform kernel against the pure
PyTorch transform, and a LLaMA-2-7B-shaped model's conversion (bf16). Every model has random weights built
from its config (nothing is downloaded), so the script runs on a machine without network; quality is not
measured here. ``--device cpu --tiny`` runs every row at toy sizes (the test suite does, so it cannot rot).
    python bench/gpu.py --device cuda [--out DIR]       (bench/gpu.sh on a lent GPU machine)"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import spiking_lm_plugin as slm
from spiking_lm_plugin.hadamard import _cuda_kernel, _walsh, online_transform
from spiking_lm_plugin.neurons import kernels


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int


SMOLLM2 = Shape("SmolLM2-135M", 576, 1536, 30, 9, 3, 49152)
LLAMA2_7B = Shape("LLaMA-2-7B", 4096, 11008, 32, 32, 32, 32000)
TINY_SMOLLM2 = Shape("SmolLM2-135M (tiny: 2 layers, hidden 64)", 64, 1536, 2, 4, 2, 256)
TINY_LLAMA2 = Shape("LLaMA-2-7B (tiny: 1 layer, hidden 64)", 64, 11008, 1, 4, 4, 256)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int = 1) -> tuple[object, float]:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    sync(device)
    return out, (time.perf_counter() - t0) / repeats


def build(shape: Shape, device: str, dtype: torch.dtype) -> LlamaForCausalLM:
    config = LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, vocab_size=shape.vocab, max_position_embeddings=4096,
                         tie_word_embeddings=shape is SMOLLM2 or shape is TINY_SMOLLM2)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    return model.eval()


def windows(shape: Shape, tokens: int, length: int, device: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, shape.vocab, (max(1, tokens // length), length), generator=gen).to(device)


def recipe(tokens: int, length: int, tiny: bool, **overrides) -> slm.SpikingConfig:
    fit = slm.FitConfig(rounds=1, threshold_steps=2, base_steps=1, batch_samples=256) if tiny else slm.FitConfig()
    return slm.SpikingConfig(calibration_tokens=tokens, sequence_length=length,
                             samples_per_site=256 if tiny else 16384, fit=fit, **overrides)


@torch.no_grad()
def plain_forward(model, ids: torch.Tensor, batch: int, device: str) -> float:
    return timed(lambda: [model(chunk) for chunk in ids.split(batch)], device)[1]


def conversion_rows(shape: Shape, device: str, tiny: bool, dtypes) -> list[dict]:
    rows = []
    tokens, length = (256, 64) if tiny else (16384, 512)
    for dtype in dtypes:
        model, build_s = timed(lambda: build(shape, device, dtype), device)
        ids = windows(shape, tokens, length, device)
        forward_s = plain_forward(model, ids, 4, device)
        config = recipe(tokens, length, tiny, prefix="none" if tiny else "auto")
        state, convert_s = timed(lambda: slm.convert(model, config, calibration=ids, show_progress=False), device)
        rows.append({"row": f"convert {shape.name} {str(dtype).removeprefix('torch.')}",
                     "seconds": convert_s, "vs one forward": convert_s / forward_s,
                     "detail": f"calibrate {state.fit['calibrate_s']:.2f} s, fit {state.fit['fit_s']:.2f} s, "
                               f"one plain forward over the {ids.numel()} tokens {forward_s:.2f} s, "
                               f"model built in {build_s:.1f} s"})
        rows += execution_rows(model, shape, device, tiny, dtype)
        del model
    return rows


@torch.no_grad()
def execution_rows(model, shape: Shape, device: str, tiny: bool, dtype) -> list[dict]:
    ids = windows(shape, 64 if tiny else 2048, 64 if tiny else 512, device)
    times = {}
    for mode in ("ann", "fused", "timestep"):
        slm.set_mode(model, mode)
        model(ids[:1])                              # warm-up: compiles the site kernels once
        times[mode] = timed(lambda: model(ids), device)[1]
    slm.set_mode(model, "ann")
    name = str(dtype).removeprefix("torch.")
    return [{"row": f"forward {mode} / ANN, {shape.name} {name}", "seconds": times[mode],
             "vs one forward": times[mode] / times["ann"], "detail": f"{ids.numel()} tokens"}
            for mode in ("fused", "timestep")]


def kernel_rows(device: str, tiny: bool) -> list[dict]:
    x = torch.randn(256 if tiny else 16384, 1536, device=device)
    tau = x.abs().amax(0)
    t = 8
    d = torch.tensor([2.0 ** -(i + 1) for i in range(t)], device=device)
    v0 = torch.zeros((), device=device)
    args = (x, tau, d.clone(), d.clone(), d, v0)
    saved = os.environ.get("SPIKING_LM_COMPILE")
    results = {}
    try:
        for label, flag in (("eager", "0"), ("compiled", "1")):
            os.environ["SPIKING_LM_COMPILE"] = flag
            kernels._compiled.clear()
            kernels.site_code(*args)                 # warm-up / compile
            results[label] = timed(lambda: kernels.site_code(*args), device, repeats=5)
    finally:
        if saved is None:
            os.environ.pop("SPIKING_LM_COMPILE", None)
        else:
            os.environ["SPIKING_LM_COMPILE"] = saved
        kernels._compiled.clear()
    same = torch.equal(results["eager"][0][0], results["compiled"][0][0])
    eager_s, compiled_s = results["eager"][1], results["compiled"][1]
    return [{"row": "site kernel compiled / eager (T = 8)", "seconds": compiled_s, "vs one forward": compiled_s / eager_s,
             "detail": f"{tuple(x.shape)} activations, eager {eager_s * 1e3:.2f} ms, same spikes: {same}"}]


def hadamard_rows(device: str, tiny: bool) -> list[dict]:
    transform = online_transform(1536)
    x = torch.randn(256 if tiny else 16384, 1536, device=device)
    kernel = _cuda_kernel() if device.startswith("cuda") else None
    if kernel is None:
        pure_s = timed(lambda: transform.apply(x), device, repeats=5)[1]
        return [{"row": "online Hadamard 1536 (fast-hadamard-transform not importable)", "seconds": pure_s,
                 "vs one forward": float("nan"), "detail": "pure PyTorch transform only"}]
    fast_s = timed(lambda: transform.apply(x), device, repeats=5)[1]
    y = x.reshape(-1, transform.m, transform.p)
    pure = lambda: torch.matmul(transform.small().to(x), _walsh(y)) / transform.p ** 0.5  # noqa: E731
    pure_s = timed(pure, device, repeats=5)[1]
    err = float((pure().reshape(x.shape) - transform.apply(x)).abs().max())
    return [{"row": "online Hadamard 1536: fast-hadamard-transform / pure PyTorch", "seconds": fast_s,
             "vs one forward": fast_s / pure_s, "detail": f"max difference {err:.2e}"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="toy sizes for every row (CPU smoke of this script)")
    parser.add_argument("--skip-7b", action="store_true", help="leave out the LLaMA-2-7B-shaped conversion")
    parser.add_argument("--out", default="bench/results", help="directory for gpu.json and gpu.md")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py: --device cuda but torch sees no GPU; use --device cpu --tiny")
    smol, llama = (TINY_SMOLLM2, TINY_LLAMA2) if args.tiny else (SMOLLM2, LLAMA2_7B)
    rows = conversion_rows(smol, args.device, args.tiny, (torch.float32, torch.bfloat16))
    rows += kernel_rows(args.device, args.tiny)
    rows += hadamard_rows(args.device, args.tiny)
    if not args.skip_7b:
        model, build_s = timed(lambda: build(llama, args.device, torch.bfloat16), args.device)
        tokens, length = (128, 64) if args.tiny else (1024, 512)
        ids = windows(llama, tokens, length, args.device)
        config = recipe(tokens, length, args.tiny, prefix="none")
        state, convert_s = timed(lambda: slm.convert(model, config, calibration=ids, show_progress=False),
                                 args.device)
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
        rows.append({"row": f"convert {llama.name} bf16 (target: 15 s + load)", "seconds": convert_s,
                     "vs one forward": float("nan"),
                     "detail": f"{tokens} calibration tokens, calibrate {state.fit['calibrate_s']:.1f} s, fit "
                               f"{state.fit['fit_s']:.1f} s, built in {build_s:.1f} s, peak GPU memory "
                               f"{peak:.1f} GiB, transform {state.fit['online_transforms']}"})
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.machine()
    meta = {"command": f"python bench/gpu.py --device {args.device}" + (" --tiny" if args.tiny else ""),
            "machine": f"{device_name}, torch {torch.__version__}", "date": time.strftime("%Y-%m-%d")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["| row | seconds | ratio | detail |", "|---|---|---|---|"]
    lines += [f"| {r['row']} | {r['seconds']:.4g} | {r['vs one forward']:.3g} | {r['detail']} |" for r in rows]
    text = f"`{meta['command']}` ({meta['machine']}, {meta['date']})\n\n" + "\n".join(lines) + "\n"
    (out / "gpu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
