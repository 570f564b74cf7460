"""Calibration forward: one pass over text with every selected site feeding its reservoir."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .fitting import SiteReservoir
from .model_surgery import spiking_sites
from .prefix import _with_prefix
from .progress import progress_bar


def record_batch(model: nn.Module, batch: torch.Tensor) -> None:
    """One calibration forward in ``record`` mode: the backbone (behind the prefix, when one is installed),
    then the head's input site only. The logits are never needed, so the lm_head matmul (a fifth of
    SmolLM2's forward) is skipped; every site sees exactly what the full forward would show it."""
    inputs = {"input_ids": batch, "use_cache": False}
    hooked = _with_prefix(model, (), inputs)
    hidden = model.model(**(hooked[1] if hooked else inputs)).last_hidden_state
    model.lm_head.sites["head_in"](hidden, need_frames=False)


def token_windows(tokenizer, texts: Iterable[str], tokens: int, sequence_length: int) -> torch.Tensor:
    """Concatenate documents (EOS-separated) and cut ``tokens`` tokens into [n, sequence_length] windows."""
    ids: list[int] = []
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"] + sep)
        if len(ids) >= tokens:
            break
    ids = ids[:tokens]
    if len(ids) < sequence_length:
        if not ids:
            raise ValueError("calibration text produced no tokens")
        sequence_length = len(ids)
    n = len(ids) // sequence_length
    return torch.tensor(ids[: n * sequence_length]).view(n, sequence_length)


@torch.no_grad()
def record_activations(model: nn.Module, windows: torch.Tensor, site_names: list[str], capacity: int,
                       batch_size: int = 4, seed: int = 0, show_progress: bool = True,
                       outlier_eta: float | None = None) -> dict[str, SiteReservoir]:
    """Run the ANN over ``windows`` and return a bounded reservoir per site.

    ``outlier_eta``: a token whose max|x| at a down_proj input exceeds eta times the batch median is left out
    of every site recorded after that point of the forward (its layer's down_proj input and all later
    layers); ``model.spiking_runtime.outlier_tokens`` counts them."""
    sites = spiking_sites(model)
    runtime = model.spiking_runtime
    reservoirs = {}
    for i, name in enumerate(site_names):
        reservoirs[name] = sites[name].reservoir = SiteReservoir(name, capacity, sites[name].channels, seed + i)
    previous = runtime.mode
    runtime.set_mode("record")
    runtime.outlier_eta, runtime.outlier_tokens = outlier_eta, 0
    device = next(model.parameters()).device
    try:
        batches = list(windows.split(batch_size))
        with progress_bar("calibrating", len(batches), show_progress) as advance:
            for batch in batches:
                runtime.record_keep = torch.ones(batch.shape, dtype=torch.bool, device=device)
                record_batch(model, batch.to(device))
                advance()
    finally:
        runtime.set_mode(previous)
        runtime.record_keep = runtime.outlier_eta = None
        for name in site_names:
            sites[name].reservoir = None
    return reservoirs
