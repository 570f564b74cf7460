"""Rewrite a loaded HF LLaMA-family model in place with spiking attention, MLP and head wrappers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .fingerprint import weights_fingerprint
from .hf_compat import use_spiking_attention
from .modules import SpikeSite, SpikingAttention, SpikingLMHead, SpikingMLP
from .modules.attention import spiking_attention_forward
from .runtime import SpikingRuntime, runtime_of
from .sites import POST_NORM_ARCHITECTURES, SUPPORTED_ARCHITECTURES, site_type

if TYPE_CHECKING:
    from .config import SpikingConfig


def check_architecture(model: nn.Module) -> None:
    """Refuse, before anything is changed, a model the conversion cannot map completely."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    experts = [k for k in ("num_experts", "num_local_experts", "n_routed_experts") if getattr(config, k, None)]
    if experts:
        raise ValueError(f"unsupported architecture {model_type!r} ({type(model).__name__}): MoE layers are not "
                         f"supported; spiking-lm supports {', '.join(SUPPORTED_ARCHITECTURES)} causal LMs")
    if getattr(config, "text_config", None) is not None and model_type not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"unsupported architecture {model_type!r} ({type(model).__name__}): multimodal models are "
                         "not supported; load the text model (e.g. Gemma3ForCausalLM)")
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"unsupported architecture {model_type!r} ({type(model).__name__}); "
                         f"spiking-lm supports {', '.join(SUPPORTED_ARCHITECTURES)} causal LMs")
    if not hasattr(model, "model") or not hasattr(model.model, "layers") or not hasattr(model, "lm_head"):
        raise ValueError(f"{type(model).__name__} is not a *ForCausalLM with .model.layers and .lm_head")


def model_fingerprint(model: nn.Module) -> str:
    """A fingerprint of the weights ("meta" for a model without any: shapes only, nothing to check)."""
    head = model.lm_head.weight
    if head.is_meta:
        return "meta"
    tied = head.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return weights_fingerprint(model.model, None if tied else {"lm_head.weight": head})


def attach(model: nn.Module) -> SpikingRuntime:
    """Wrap every decoder layer's attention and MLP and the LM head (idempotent); returns ``model.spiking``."""
    runtime = getattr(model, "spiking", None)
    if isinstance(runtime, SpikingRuntime):
        return runtime
    check_architecture(model)
    fingerprint = model_fingerprint(model)
    use_spiking_attention(model, spiking_attention_forward)
    runtime = SpikingRuntime(mode="ann", fingerprint=fingerprint)
    device = next(model.parameters()).device
    for i, layer in enumerate(model.model.layers):
        layer.self_attn = SpikingAttention(layer.self_attn, i, runtime).to(device)
        layer.mlp = SpikingMLP(layer.mlp, i, runtime).to(device)
    model.lm_head = SpikingLMHead(model.lm_head, runtime).to(device)
    model.spiking = runtime
    return runtime


def spiking_sites(model: nn.Module) -> dict[str, SpikeSite]:
    """All sites of an attached model in network order."""
    return {m.name: m for m in model.modules() if isinstance(m, SpikeSite)}


def residual_rotation(size: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Orthogonal Q for the residual stream: a Hadamard matrix where a construction exists for ``size``,
    else a seeded random orthogonal matrix (fused into the weights either way: no run-time cost)."""
    from .hadamard import hadamard_matrix, has_hadamard

    if has_hadamard(size):
        return hadamard_matrix(size, dtype)
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(size, size, generator=gen, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


@torch.no_grad()
def _rotate_residual(model: nn.Module, seed: int) -> None:
    """QuaRot-style: fold every RMSNorm weight into the linears it feeds, untie the embeddings, then
    rotate the residual stream by Q: readers W <- W diag(g) Q^T, writers W <- Q W, embeddings E <- E Q^T.
    RMSNorm commutes with an orthogonal Q once its weight is 1, so the function is unchanged."""
    backbone = model.model
    hidden = model.config.hidden_size
    q = residual_rotation(hidden, seed)

    def read(linear: nn.Linear, gamma: torch.Tensor | None) -> None:
        w = linear.weight.double()
        if gamma is not None:
            w = w * gamma.double()
        linear.weight.copy_((w @ q.T).to(linear.weight.dtype))

    def write(linear: nn.Linear) -> None:
        linear.weight.copy_((q @ linear.weight.double()).to(linear.weight.dtype))
        if linear.bias is not None:
            linear.bias.copy_((q @ linear.bias.double()).to(linear.bias.dtype))

    head = model.lm_head.linear
    if head.weight.data_ptr() == backbone.embed_tokens.weight.data_ptr():
        head.weight = nn.Parameter(head.weight.detach().clone())
        model.config.tie_word_embeddings = False
    emb = backbone.embed_tokens.weight
    emb.copy_((emb.double() @ q.T).to(emb.dtype))
    for layer in backbone.layers:
        attn, mlp = layer.self_attn, layer.mlp
        for norm, readers in ((layer.input_layernorm, attn.input_linears()),
                              (layer.post_attention_layernorm, (mlp.gate_proj, mlp.up_proj))):
            for linear in readers:
                read(linear, norm.weight)
            norm.weight.fill_(1.0)
        write(attn.output_linear)
        write(mlp.down_proj)
    read(head, backbone.norm.weight)
    backbone.norm.weight.fill_(1.0)


def apply_rotation(model: nn.Module, rotation: str, seed: int = 0, transform: str = "auto") -> dict[str, str]:
    """Fold the recipe's exact transforms into the weights (idempotent): ``online`` puts an orthogonal T on
    the down_proj input at run time and replaces W by W T^T (a Hadamard where one is constructible, else
    the seeded Kronecker fallback; ``transform`` in hadamard.online_transform); ``full`` also rotates the
    residual stream (norms folded); the ANN function is unchanged either way. Returns, per down_proj input
    size, the transform used."""
    from .hadamard import online_transform

    runtime = runtime_of(model)
    done = runtime.rotation
    if rotation == done:
        return dict(runtime.transforms)
    if done != "none":
        raise ValueError(f"model already carries rotation {done!r}; load a fresh base model for {rotation!r}")
    used: dict[str, str] = {}
    arch = model.config.model_type
    if rotation == "full" and arch in POST_NORM_ARCHITECTURES:
        raise ValueError(f"rotation='full' is not supported for {arch}: its norms sit after the sublayers, so "
                         "their weights cannot be folded into a linear; use rotation='online'")
    if rotation in ("online", "full"):     # every size checked before any weight changes
        transforms = [online_transform(layer.mlp.down_proj.in_features, transform, seed)
                      for layer in model.model.layers]
    if rotation == "full":
        _rotate_residual(model, seed)
    if rotation in ("online", "full"):
        for layer, t in zip(model.model.layers, transforms):
            mlp = layer.mlp
            with torch.no_grad():
                w = mlp.down_proj.weight
                w.copy_(t.apply(w.double()).to(w.dtype))
            mlp.online_transform = t
            used[str(t.size)] = t.describe()
    runtime.rotation, runtime.transforms = rotation, used
    return dict(used)


def prepare(model: nn.Module, config: "SpikingConfig") -> dict[str, str]:
    """The first stage: wrap the model (idempotent), fold the recipe's rotation into its weights, then
    quantize the decoder linears per its weight recipe (torchao; docs/DESIGN.md, "Weights"); returns the
    online transform used per down_proj input size."""
    from .weight_quantization import apply_weight_recipe, check_weight_recipe

    attach(model)
    recipe = config.weight_recipe
    if not runtime_of(model).weights:
        check_weight_recipe(model, recipe)           # a bad group size refused before any weight changes
    used = apply_rotation(model, config.rotation, config.seed, config.online_transform)
    apply_weight_recipe(model, recipe)
    return used


def selected_sites(model: nn.Module, config: "SpikingConfig") -> list[str]:
    """The recipe's sites of an attached model, in network order."""
    return [name for name in spiking_sites(model) if site_type(name) in config.sites]
