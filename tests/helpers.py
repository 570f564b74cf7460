"""Tiny random LLaMA-family models and configs shared by the tests."""

from __future__ import annotations

import torch
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

import spiking_lm_plugin as slm

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256)
FAST_FIT = slm.FitConfig(rounds=2, threshold_steps=10, base_steps=5, batch_samples=1024)


def tiny_model(arch: str = "llama", vocab_size: int = 256, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    kw = {**TINY, "vocab_size": vocab_size, **overrides}
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**kw)).eval()
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**kw)).eval()
    if arch == "mistral":
        return MistralForCausalLM(MistralConfig(sliding_window=16, **kw)).eval()
    raise ValueError(arch)


def tiny_config(**overrides) -> slm.SpikingConfig:
    kw = dict(timesteps=8, grains=2, samples_per_site=2048, fit=FAST_FIT)
    kw.update(overrides)
    return slm.SpikingConfig(**kw)


def random_windows(vocab: int, n: int = 8, length: int = 32, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, length), generator=gen)


