"""Shared fixtures: tiny random LLaMA-family models, the real SmolLM2 (cached asset), and a converted
tiny checkpoint on disk with a real tokenizer for the lm-eval CLI tests."""

from __future__ import annotations

import os

# compiled kernels cost ~20 s per process to build; the eager path gives the same spikes
# (tests/test_kernels.py checks the compiled one against it)
os.environ.setdefault("SPIKING_LM_COMPILE", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

import spiking_lm_plugin as slm

from .helpers import tiny_config, tiny_model

@pytest.fixture(scope="session")
def smollm2_path() -> str:
    from spiking_lm_plugin.assets import resolve_model

    return resolve_model("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path)


def smollm2_layers(path: str, layers: int):
    """The real SmolLM2-135M cut to its first ``layers`` decoder layers (fp32)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    return model


@pytest.fixture(scope="session")
def smollm2_two_layers(smollm2_path):
    return smollm2_layers(smollm2_path, 2)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer):
    """A tiny random LLaMA with the real SmolLM2 tokenizer, saved as an HF folder."""
    path = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_model("llama", vocab_size=len(smollm2_tokenizer), seed=3,
                       bos_token_id=smollm2_tokenizer.bos_token_id, eos_token_id=smollm2_tokenizer.eos_token_id)
    model.save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model_dir, smollm2_tokenizer):
    """A converted checkpoint of ``tiny_model_dir`` calibrated on real text."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    slm.convert(model, tiny_config(calibration_tokens=2048, sequence_length=128), tokenizer=smollm2_tokenizer,
                base_model=str(tiny_model_dir), show_progress=False)
    out = tmp_path_factory.mktemp("ckpt") / "tiny-spiking"
    slm.save(model, out)
    return out


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests need CUDA: skipped (not failed) on machines without it, as in CI."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
