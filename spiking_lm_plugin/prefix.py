"""Prefixed outlier tokens (PrefixQuant; docs/DESIGN.md, "Outliers").

A few tokens become attention sinks with massive activations (token-wise max|x| at the down_proj input
hundreds of times the median). They set every per-channel tau, so all other tokens are coded coarsely.
Prefixing the sequence with such tokens moves the sink into a KV cache computed once by the ANN: the
real tokens then carry no massive activations and the sites are calibrated on a tight range.
"""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn
from .hf_compat import cache_layers, cache_of, new_cache, shift_positions, with_cache
from .model_surgery import spiking_sites
from .runtime import CachePrefix, SpikingRuntime, runtime_of


@dataclass
class PrefixSearch:
    """What the prefix selection saw: the chosen tokens and the worst outlier ratio before/after."""

    tokens: list[int]
    ratio_before: float
    ratio_after: float
    outliers_per_sequence: float


def _down_inputs(model: nn.Module):
    return [s for name, s in spiking_sites(model).items() if name.endswith(".down_in")]


class _RatioAbove(Exception):
    """A trial's running outlier ratio passed the bound: the rest of its forward cannot change the verdict."""


@torch.no_grad()
def token_outlier_ratios(model: nn.Module, windows: torch.Tensor, prefix: list[int],
                         batch_size: int = 4, bound: float | None = None) -> torch.Tensor | None:
    """[n, L]: per token, the largest over layers of max|x| at the down_proj input divided by that
    layer's median token max (PrefixQuant's outlier statistic), computed by the analog model behind
    ``prefix`` (the installed prefix is put back afterwards).

    ``bound``: when the windows run as one batch, the forward stops (and None is returned) at the first
    layer whose ratio exceeds it: a candidate that already loses to the best one needs no more layers."""
    runtime = runtime_of(model)
    maxima: dict[int, torch.Tensor] = {}
    early_stop = bound is not None and windows.shape[0] <= batch_size

    def observe(i: int, x: torch.Tensor) -> None:
        maxima[i] = x.abs().amax(-1).float()
        if early_stop and float((maxima[i] / maxima[i].flatten().median().clamp_min(1e-12)).max()) > bound:
            raise _RatioAbove

    hooks = [site.register_forward_pre_hook(lambda m, a, i=i: observe(i, a[0]))
             for i, site in enumerate(_down_inputs(model))]
    saved = runtime.prefix
    device = next(model.parameters()).device
    try:
        install_prefix(model, prefix)
        rows = []
        with runtime.use(mode="analog", meter=None):
            for batch in windows.split(batch_size):
                model.model(**prefixed_inputs(model, batch.to(device)))     # the backbone only: no lm_head cost
                rows.append(torch.stack([maxima[i] for i in range(len(maxima))]).cpu())   # [layers, B, L]
        per_layer = torch.cat(rows, dim=1)
        median = per_layer.flatten(1).median(dim=1).values.clamp_min(1e-12)
        return (per_layer / median[:, None, None]).amax(0)
    except _RatioAbove:
        return None
    finally:
        for h in hooks:
            h.remove()
        _set_prefix(model, saved)


def candidate_tokens(windows: torch.Tensor, ratios: torch.Tensor, eta: float, specials: list[int],
                     top: int = 3) -> list[int]:
    """Prefix candidates, all from the data: the special tokens, the most frequent outlier tokens away
    from position 0 (the first position is a sink whatever its token) and the most frequent tokens."""
    outliers = Counter(windows[:, 1:][ratios[:, 1:] > eta].tolist())
    frequent = Counter(windows.flatten().tolist())
    out: list[int] = []
    for tok in list(specials) + [t for t, _ in outliers.most_common(top)] + [t for t, _ in frequent.most_common(top)]:
        if tok not in out:
            out.append(int(tok))
    return out


def select_prefix(model: nn.Module, windows: torch.Tensor, eta: float = 64.0, max_tokens: int = 4,
                  specials: list[int] | None = None, batch_size: int = 4) -> PrefixSearch:
    """Greedy PrefixQuant selection: append the candidate that most lowers the worst outlier ratio, until
    no token of the calibration data exceeds ``eta`` times the median or ``max_tokens`` are used. The prefix
    length is thus counted from the data (0 when the model has no massive activations)."""
    ratios = token_outlier_ratios(model, windows, [], batch_size)
    before = float(ratios.max())
    candidates = candidate_tokens(windows, ratios, eta, specials or [])
    prefix: list[int] = []
    while float(ratios.max()) > eta and len(prefix) < max_tokens:
        best_tok, best, best_max = None, None, None
        for tok in candidates:     # a trial stops once it is worse than the best so far (same choice, ties too)
            trial = token_outlier_ratios(model, windows, prefix + [tok], batch_size, best_max)
            if trial is not None and (best_max is None or float(trial.max()) < best_max):
                best_tok, best, best_max = tok, trial, float(trial.max())
        if best is None or best_max > 0.9 * float(ratios.max()):   # no candidate, or none helps any more
            break
        prefix.append(best_tok)
        ratios = best
    per_seq = float((ratios > eta).sum()) / max(1, windows.shape[0])
    return PrefixSearch(prefix, before, float(ratios.max()), per_seq)


@dataclass
class PrefixKV:
    """The prefix tokens and their analog keys/values per layer ([1, kv_heads, P, head_dim])."""

    tokens: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    bos_token_id: int | None = None

    def __len__(self) -> int:
        return len(self.tokens)


@torch.no_grad()
def compute_prefix_kv(model: nn.Module, tokens: list[int], bos_token_id: int | None = None) -> PrefixKV:
    """Run the ANN once over the prefix (sites analog, nothing metered) and keep its KV cache."""
    device = next(model.parameters()).device
    cache = new_cache(model.config)
    with runtime_of(model).use(mode="ann", meter=None):
        model.model(**with_cache({"input_ids": torch.tensor([tokens], device=device), "use_cache": True}, cache))
    layers = cache_layers(cache)
    if len(layers) != len(model.model.layers) or any(k is None for k, _ in layers):
        raise RuntimeError(f"the prefix forward filled {len(layers)} of {len(model.model.layers)} cache layers: "
                           "the KV cache did not reach the attention modules")
    keys = [k.detach().clone() for k, _ in layers]
    values = [v.detach().clone() for _, v in layers]
    return PrefixKV(list(tokens), keys, values, bos_token_id)


def _as_kwargs(module: nn.Module, args: tuple, kwargs: dict) -> dict:
    if not args:
        return dict(kwargs)
    names = list(inspect.signature(module.forward).parameters)
    return {**dict(zip(names, args)), **kwargs}


def _prefix_hook(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook of a converted model: the spiking executions (and calibration) run after the
    prefix; ``ann`` mode stays the base model exactly."""
    runtime = getattr(module, "spiking", None)
    if not isinstance(runtime, SpikingRuntime) or not runtime.prefixed:
        return None
    return _with_prefix(module, runtime, args, kwargs)


def prefixed_inputs(model: nn.Module, ids: torch.Tensor) -> dict:
    """Backbone keyword arguments for ``model.model(**...)`` that run ``ids`` behind the installed prefix
    (whatever the mode; the stages that call the backbone directly use it)."""
    inputs = {"input_ids": ids, "use_cache": False}
    hooked = _with_prefix(model, runtime_of(model), (), inputs)
    return hooked[1] if hooked else inputs


def _with_prefix(module: nn.Module, runtime: SpikingRuntime, args: tuple, kwargs: dict):
    """Inject the prefix KV as the KV cache (a fresh cache, or the empty one ``generate`` passes)
    and shift positions (every position keyword) and the 2-D attention mask by its length; None when
    there is nothing to do."""
    prefix = runtime.prefix
    if prefix is None or len(prefix) == 0:
        return None
    kwargs = _as_kwargs(module, args, kwargs)
    ids, embeds = kwargs.get("input_ids"), kwargs.get("inputs_embeds")
    ref = ids if ids is not None else embeds
    if ref is None:
        return None
    bsz, length = ref.shape[0], ref.shape[1]
    p = len(prefix)
    cache = cache_of(kwargs)
    if cache is None or cache.get_seq_length() == 0:
        cache = cache if cache is not None else new_cache(module.config)
        dtype = module.model.embed_tokens.weight.dtype
        for layer, (k, v) in enumerate(zip(prefix.keys, prefix.values)):
            k, v = k.to(ref.device, dtype), v.to(ref.device, dtype)
            cache.update(k.repeat(bsz, 1, 1, 1), v.repeat(bsz, 1, 1, 1), layer)
        # a second BOS would become a second attention sink: hide a leading BOS when the prefix has one
        hidden = None
        if ids is not None and prefix.bos_token_id is not None and prefix.bos_token_id in prefix.tokens:
            hidden = ids[:, 0] == prefix.bos_token_id
        runtime.caches[cache] = CachePrefix(p, hidden if hidden is not None and bool(hidden.any()) else None)
        kwargs = with_cache(kwargs, cache)
    elif cache not in runtime.caches or runtime.caches[cache].length != p:
        return None                        # a cache this hook did not start: leave it as given
    mask = kwargs.get("attention_mask")
    hidden = runtime.caches[cache].hidden_bos
    if (mask is None or mask.ndim == 2) and (mask is not None or hidden is not None):
        past = cache.get_seq_length() - p          # this call's tokens are not in the cache yet
        if mask is None:
            mask = torch.ones(bsz, past + length, dtype=torch.long, device=ref.device)
        mask = torch.cat([torch.ones(bsz, p, dtype=mask.dtype, device=mask.device), mask], dim=1)
        if hidden is not None:
            mask[:, p] = torch.where(hidden.to(mask.device), torch.zeros_like(mask[:, p]), mask[:, p])
        kwargs["attention_mask"] = mask
    return (), shift_positions(kwargs, p)


def install_prefix(model: nn.Module, tokens: list[int], bos_token_id: int | None = None) -> None:
    """Run every later forward of ``model`` (in every mode but ``ann``) after ``tokens``, their KV computed
    once by the ANN; an empty list removes the prefix."""
    if not tokens:
        _set_prefix(model, None)
        return
    if bos_token_id is None:
        bos_token_id = getattr(model.config, "bos_token_id", None)
    _set_prefix(model, None)
    _set_prefix(model, compute_prefix_kv(model, list(tokens), bos_token_id))


def _set_prefix(model: nn.Module, prefix: PrefixKV | None) -> None:
    """Install an already computed prefix (or none) and the forward pre-hook that applies it."""
    runtime = runtime_of(model)
    if runtime.prefix_handle is not None:
        runtime.prefix_handle.remove()
        runtime.prefix_handle = None
    runtime.prefix = prefix if prefix is not None and len(prefix) > 0 else None
    if runtime.prefix is not None:
        runtime.prefix_handle = model.register_forward_pre_hook(_prefix_hook, with_kwargs=True)
