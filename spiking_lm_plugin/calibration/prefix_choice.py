"""Which prefix tokens a recipe resolves to: explicit, none, or chosen on the calibration windows."""

from __future__ import annotations

import time

import torch
from torch import nn

from ..config import SpikingConfig
from ..prefix import select_prefix

#: the prefix search looks at this slice of the calibration windows (sinks show within a few hundred tokens)
PREFIX_SEARCH_WINDOWS = 4
PREFIX_SEARCH_LENGTH = 128


def bos_token_id(model: nn.Module, tokenizer) -> int | None:
    bos = getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None
    return bos if bos is not None else getattr(model.config, "bos_token_id", None)


def resolve_prefix(model: nn.Module, config: SpikingConfig, windows: torch.Tensor, tokenizer,
                   bos: int | None) -> tuple[list[int], dict]:
    """The recipe's prefix tokens and, when they were searched, what the search saw."""
    if isinstance(config.prefix, list):
        return list(config.prefix), {}
    if config.prefix == "none" or config.prefix_max_tokens == 0:
        return [], {}
    specials = [t for t in (bos, getattr(tokenizer, "eos_token_id", None) if tokenizer is not None
                            else getattr(model.config, "eos_token_id", None)) if isinstance(t, int)]
    t0 = time.perf_counter()
    search = select_prefix(model, windows[:PREFIX_SEARCH_WINDOWS, :PREFIX_SEARCH_LENGTH], config.prefix_eta,
                           config.prefix_max_tokens, specials, config.batch_size)
    return search.tokens, {"ratio_before": search.ratio_before, "ratio_after": search.ratio_after,
                           "outliers_per_sequence": search.outliers_per_sequence,
                           "seconds": time.perf_counter() - t0}
