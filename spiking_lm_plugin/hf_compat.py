"""The one module that knows how transformers versions differ (docs/DESIGN.md, "Transformers versions").

Every other module reaches transformers' model internals through these helpers: the registration of the
spiking attention function (``AttentionInterface``, with the eager mask format through
``AttentionMaskInterface``), the keyword a model takes its KV cache under (``past_key_values`` up to 5.23,
``cache`` from 5.24), how a cache's per-layer tensors are read and the cache an output carries. A keyword reaching the attention function that looks like a cache or a mask and that this module
does not know is refused with the installed version in the message: a cache must never be dropped
silently (that gives wrong logits, not an error).
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

import torch
import transformers
from transformers import AttentionInterface, AttentionMaskInterface, DynamicCache
from transformers.cache_utils import Cache
from transformers.models.llama.modeling_llama import LlamaModel

__all__ = ["ATTENTION_NAME", "CACHE_KWARGS", "POSITION_KWARGS", "CompatibilityError", "cache_keyword",
           "cache_layers", "cache_of", "check_attention_kwargs", "check_attention_mask", "new_cache",
           "output_cache", "shift_positions", "use_spiking_attention", "with_cache"]

VERSION: str = transformers.__version__

#: every name a transformers release has used for the KV cache keyword of model/layer/attention forwards
#: (``past_key_value`` was the attention modules' name in 4.x)
CACHE_KWARGS = ("cache", "past_key_values", "past_key_value")

#: keywords that carry absolute token positions (``cache_position`` drives positions and masks up to
#: 5.23; 5.24 derives them from the cache length): a prefix in the cache shifts every one of them
POSITION_KWARGS = ("position_ids", "cache_position")

#: cache-sounding keywords an attention forward may pass on that carry nothing the spiking attention needs
#: (positions are already in the rotary embeddings, the window in the mask)
_IGNORED = frozenset({"cache_position", "use_cache"})

#: the name the spiking attention function is registered under
ATTENTION_NAME = "spiking"

_WATCHED_WORDS = ("cache", "past", "mask", "kv", "key_value")


class CompatibilityError(RuntimeError):
    """transformers handed the spiking wrappers something this version of spiking-lm does not understand."""


@lru_cache(maxsize=None)
def cache_keyword() -> str:
    """The keyword the installed transformers passes the KV cache under (read from LlamaModel.forward)."""
    params = inspect.signature(LlamaModel.forward).parameters
    for name in CACHE_KWARGS:
        if name in params:
            return name
    raise CompatibilityError(f"transformers {VERSION}: LlamaModel.forward takes none of {CACHE_KWARGS}; "
                             "this spiking-lm does not know how it passes the KV cache")


def _check_cache(cache: Any, where: str) -> Cache | None:
    if cache is None or isinstance(cache, Cache):
        return cache
    raise CompatibilityError(f"{where}: got a KV cache of type {type(cache).__name__}, not a transformers Cache "
                             f"(transformers {VERSION}); legacy tuple caches are not supported")


def check_attention_kwargs(kwargs: dict[str, Any], where: str) -> None:
    """Refuse what the attention function must not ignore: a KV cache (the model's own forward updates it
    before calling the function; one arriving here would mean it no longer does) and any unknown keyword
    that names a cache, a mask or past keys/values."""
    caches = [name for name in CACHE_KWARGS if kwargs.get(name) is not None]
    if caches:
        raise CompatibilityError(f"{where}: transformers {VERSION} passed the KV cache ({', '.join(caches)}) to the "
                                 "attention function; this spiking-lm expects the attention forward to update it")
    unknown = [k for k in kwargs if k not in CACHE_KWARGS and k not in _IGNORED
               and any(word in k.lower() for word in _WATCHED_WORDS)]
    if unknown:
        raise CompatibilityError(f"{where}: transformers {VERSION} passed {', '.join(map(repr, sorted(unknown)))}, "
                                 "which this spiking-lm does not understand; refusing rather than ignoring "
                                 "a cache or mask (pin transformers to the range in setup.py)")


def check_attention_mask(mask: torch.Tensor | None, where: str) -> None:
    """The spiking attention reads 4-D masks ([B|1, 1, L, S], boolean or additive) only."""
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.ndim != 4):
        kind = type(mask).__name__ if not isinstance(mask, torch.Tensor) else f"{mask.ndim}-D tensor"
        raise CompatibilityError(f"{where}: expected a 4-D attention mask from transformers {VERSION}, got a {kind}")


def new_cache(config: Any) -> DynamicCache:
    """An empty dynamic KV cache for ``config``'s model."""
    return DynamicCache(config=config)


def cache_layers(cache: Cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the cached (keys, values), each [B, kv_heads, S, head_dim]."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    raise CompatibilityError(f"transformers {VERSION}: {type(cache).__name__} has no per-layer tensors")


def output_cache(outputs: Any) -> Cache | None:
    """The KV cache a model output carries (``cache`` from 5.24, ``past_key_values`` before)."""
    for name in CACHE_KWARGS:
        value = getattr(outputs, name, None)
        if value is not None:
            return value
    return None


def cache_of(kwargs: dict[str, Any]) -> Cache | None:
    """The cache in a model-level forward's keyword arguments, under either name."""
    return _check_cache(next((kwargs[n] for n in CACHE_KWARGS if kwargs.get(n) is not None), None), "forward")


def with_cache(kwargs: dict[str, Any], cache: Cache | None) -> dict[str, Any]:
    """``kwargs`` with the cache under this version's keyword (and not under the other one)."""
    out = {k: v for k, v in kwargs.items() if k not in CACHE_KWARGS}
    out[cache_keyword()] = cache
    return out


def shift_positions(kwargs: dict[str, Any], offset: int) -> dict[str, Any]:
    """``kwargs`` with every absolute-position keyword moved ``offset`` tokens on."""
    out = dict(kwargs)
    for name in POSITION_KWARGS:
        if out.get(name) is not None:
            out[name] = out[name] + offset
    return out


def use_spiking_attention(model: torch.nn.Module, forward: Any) -> None:
    """Register ``forward`` as the ``spiking`` attention function (with eager's materialized masks: exact
    pair counts for the energy meter) and switch ``model`` to it."""
    AttentionInterface.register(ATTENTION_NAME, forward)
    AttentionMaskInterface.register(ATTENTION_NAME, AttentionMaskInterface()["eager"])
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(ATTENTION_NAME)
    else:
        model.config._attn_implementation = ATTENTION_NAME
