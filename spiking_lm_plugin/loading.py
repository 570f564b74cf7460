"""Load a base model and tokenizer by alias, path or hub id (float32 by default, any device)."""

from __future__ import annotations

from pathlib import Path

import torch

from .assets import resolve_model

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "float64": torch.float64}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[name]


def load_base_model(name: str, device: str = "cpu", dtype: str = "float32", device_map: str | None = None):
    """(model, tokenizer, resolved path). ``device_map="auto"`` spreads a large model over GPUs (accelerate)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        raise ValueError(f"could not load model {name!r}: {path} is a folder without config.json, not a Hugging "
                         "Face model folder (save one with model.save_pretrained)")
    kwargs = {"dtype": parse_dtype(dtype)}
    if device_map:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ValueError(f"could not load model {name!r}: not an alias (smollm2-135m), not a local HF folder, "
                         f"and not reachable as a hub id ({exc.__class__.__name__}: {str(exc)[:300]})") from exc
    if not device_map:
        model = model.to(device)
    return model.eval(), tokenizer, path
