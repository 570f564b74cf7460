"""The ANN's energy from a model's config alone: one forward on the meta device (no weights), counted by
the same wrappers and cost models as every other run (docs/DESIGN.md, "Energy")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .energy import EnergyConstants, EnergyMeter, cost_model


def load_model_config(source: str) -> Any:
    """A transformers config from an alias, an HF folder, a config.json path or a hub id."""
    from transformers import AutoConfig

    from .assets import MODEL_ALIASES, resolve_model

    path = Path(source)
    if source in MODEL_ALIASES:
        return AutoConfig.from_pretrained(resolve_model(source))
    if path.is_file():
        import json

        data = json.loads(path.read_text())
        model_type = data.pop("model_type", None)
        if model_type is None:
            raise ValueError(f"{source}: a config.json needs a model_type")
        return AutoConfig.for_model(model_type, **data)
    if path.is_dir() and not (path / "config.json").is_file():
        raise ValueError(f"{source}: no config.json in this folder")
    looks_local = source.endswith(".json") or source.startswith(("/", "./", "../", "~"))
    if looks_local and not path.exists():
        raise ValueError(f"{source}: no such file or folder")
    return AutoConfig.from_pretrained(source)


def ann_baseline(source: str | Any, tokens: int = 512, convention: str = "ours",
                 constants: EnergyConstants | None = None) -> dict[str, Any]:
    """MACs, ACs and joules of the ANN on one ``tokens``-long causal sample (read/write included)."""
    from transformers import AutoModelForCausalLM

    from .model_surgery import attach

    if tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    config = load_model_config(source) if isinstance(source, str) else source
    constants = constants or EnergyConstants(read_write=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config).eval()
    runtime = attach(model)
    meter = EnergyMeter(constants, cost_model=cost_model(convention))
    ids = torch.zeros(1, tokens, dtype=torch.long, device="meta")
    # a 4-D mask is used as given: transformers' own mask building reads values, which meta tensors lack
    # (the spiking attention counts the causal pairs of an unpadded sample instead)
    mask = torch.zeros(1, 1, tokens, tokens, device="meta")
    with torch.no_grad(), runtime.use(mode="ann", meter=meter):
        model(ids, attention_mask=mask, use_cache=False)
    report = meter.summary()
    return {"model": getattr(config, "model_type", "?"), "convention": convention, "tokens": tokens,
            "mac_g": report["mac"] / 1e9, "ac_g": report["ac"] / 1e9, "energy_j": report["compute_j"],
            "read_write_j": report["read_write_j"], "total_j": report["compute_j"] + report["read_write_j"],
            "by_kind_mac_g": {k: v["mac"] / 1e9 for k, v in report["by_kind"].items()}}
