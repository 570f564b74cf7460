"""A cheap, dtype-independent fingerprint of a model's weights (names, shapes, strided values)."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

_PROBES = 2048


def weights_fingerprint(backbone: nn.Module, extra: dict[str, torch.Tensor] | None = None) -> str:
    """sha256 over each parameter's name, shape and up to 2048 strided values rounded to bf16, so the
    same weights in fp32 or bf16 hash the same while a different model (or fine-tune) does not."""
    digest = hashlib.sha256()
    items = list(backbone.named_parameters()) + sorted((extra or {}).items())
    for name, param in items:
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // _PROBES)
        probe = flat[::step][:_PROBES].to("cpu", torch.bfloat16).to(torch.float32)
        digest.update(name.encode())
        digest.update(str(tuple(param.shape)).encode())
        digest.update(probe.numpy().tobytes())
    return digest.hexdigest()
