"""Low-bit weights for the decoder's linears, quantized by torchao (paper Table 8; docs/DESIGN.md, "Weights").

The recipe (bits, group size) is applied after the exact rotation / transform folding and before
calibration, so the neurons are fitted on the activations of the quantized model. torchao's
``IntxWeightOnlyConfig`` (symmetric, per output channel or per group of input channels; 4-bit scales
chosen by HQQ, 8-bit ones from the row maxima) quantizes each decoder linear in place; its tensor subclass runs ``F.linear`` on CPU and CUDA. Embeddings and the LM
head keep the model's dtype, as weight-only PTQ methods usually do.

A float64 model (the exactness tests) cannot hold torchao's tensors (torchao refuses float64 inputs): its
linears get torchao's quantized values dequantized to float64, the same numbers exactly.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from .weight_recipe import TORCHAO_MISSING, WeightRecipe, WeightRecipeError, describe_weights

#: probes per linear in the quantized-weights fingerprint
_PROBES = 4096
#: torchao's choice of scales per width: the row maximum at 8 bits, HQQ's scale search at 4
QPARAMS = {8: "affine", 4: "hqq_scale_only"}


def torchao_config(recipe: WeightRecipe):
    """torchao's weight-only config of ``recipe``: symmetric int8 / int4, per row or per group. At 4 bits
    the scales come from torchao's HQQ scale search (``QPARAMS``): the rotation folded into down_proj spreads
    its few large weight columns over every group, and a group's maximum then wastes most of 16 levels."""
    torchao_version()
    from torchao.quantization import IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_primitives import MappingType
    from torchao.quantization.quantize_.workflows.intx.intx_choose_qparams_algorithm import (
        IntxChooseQParamsAlgorithm)

    granularity = PerAxis(0) if recipe.group_size is None else PerGroup(recipe.group_size)
    return IntxWeightOnlyConfig(weight_dtype=torch.int8 if recipe.bits == 8 else torch.int4,
                                granularity=granularity, mapping_type=MappingType.SYMMETRIC,
                                intx_choose_qparams_algorithm=IntxChooseQParamsAlgorithm(QPARAMS[recipe.bits]))


def decoder_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The linears a weight recipe quantizes (an attached model's attention and MLP projections), by name."""
    names = {id(m): n for n, m in model.named_modules()}
    linears = []
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        linears += [*attn.input_linears(), attn.output_linear, mlp.gate_proj, mlp.up_proj, _plain(mlp.down_proj)]
    return [(names.get(id(lin), "linear"), lin) for lin in linears]


def _plain(module: nn.Module) -> nn.Linear:
    return getattr(module, "linear", module)


def is_quantized(weight: torch.Tensor) -> bool:
    """Whether ``weight`` is a torchao quantized tensor (anything that dequantizes itself)."""
    return type(weight) is not nn.Parameter and type(weight) is not torch.Tensor and hasattr(weight, "dequantize")


def dense_weight(linear: nn.Linear, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The weight as a plain tensor (a torchao tensor dequantized), for the ops torchao's subclass lacks."""
    w = linear.weight
    if is_quantized(w):
        w = w.dequantize()
    return w if dtype is None else w.to(dtype)


def check_weight_recipe(model: nn.Module, recipe: WeightRecipe | None) -> None:
    """Refuse a group size that does not divide a linear's input width, or a model already quantized,
    before any weight changes."""
    if recipe is None:
        return
    torchao_version()
    for name, linear in decoder_linears(model):
        if is_quantized(linear.weight):
            raise WeightRecipeError(f"{name} already holds quantized weights ({type(linear.weight).__name__}); "
                                    "load the base model unquantized and let the recipe quantize it")
        if recipe.group_size is not None and linear.in_features % recipe.group_size:
            raise WeightRecipeError(f"weight_group_size {recipe.group_size} does not divide the input width "
                                    f"{linear.in_features} of {name}; choose a divisor of every linear's input "
                                    "width (e.g. 32)")


def torchao_version() -> str:
    try:
        import torchao
    except ImportError as exc:
        raise WeightRecipeError(TORCHAO_MISSING) from exc
    return torchao.__version__


@torch.no_grad()
def quantize_weights(model: nn.Module, recipe: WeightRecipe) -> dict:
    """Quantize every decoder linear of an attached model in place with torchao; returns the record a
    checkpoint keeps (library, version, bits, group size, fingerprint of the quantized weights)."""
    from torchao.quantization import quantize_

    version = torchao_version()
    check_weight_recipe(model, recipe)
    config = torchao_config(recipe)
    for _, linear in decoder_linears(model):
        if linear.weight.dtype == torch.float64:
            _quantize_float64(linear, config, quantize_)
        else:
            quantize_(linear, config, filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
        linear.weight_bits = recipe.bits
    return {"library": "torchao", "version": version, "config": type(config).__name__, "qparams": QPARAMS[recipe.bits], "bits": recipe.bits,
            "group_size": recipe.group_size, "fingerprint": quantized_fingerprint(model)}


def _quantize_float64(linear: nn.Linear, config, quantize_) -> None:
    """torchao's quantized values of a float64 linear, held dequantized in float64 (exact: int x fp32 scale)."""
    probe = nn.Linear(linear.in_features, linear.out_features, bias=False, device=linear.weight.device)
    probe.weight.data = linear.weight.detach().float()
    quantize_(probe, config, filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
    linear.weight = nn.Parameter(probe.weight.dequantize().double(), requires_grad=False)


def quantized_fingerprint(model: nn.Module) -> str:
    """sha256 over strided exact values of every quantized linear's dequantized weight: another library
    version that rounds or scales differently changes it, unlike the bf16-rounded base fingerprint."""
    digest = hashlib.sha256()
    for name, linear in decoder_linears(model):
        flat = dense_weight(linear).detach().reshape(-1)
        step = max(1, flat.numel() // _PROBES)
        digest.update(name.encode())
        digest.update(flat[::step][:_PROBES].to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()


def apply_weight_recipe(model: nn.Module, recipe: WeightRecipe | None) -> dict:
    """Quantize per ``recipe`` once (idempotent on the model's runtime); {} for unquantized weights.
    A model already carrying another recipe is refused."""
    from .runtime import runtime_of

    runtime = runtime_of(model)
    if recipe is None and not runtime.weights:
        return {}
    applied = runtime.weights
    if applied:
        if recipe is not None and (applied["bits"], applied["group_size"]) == (recipe.bits, recipe.group_size):
            return dict(applied)
        raise WeightRecipeError(f"model already carries {describe_weights(WeightRecipe.from_record(applied))}; "
                                f"load a fresh base model for {describe_weights(recipe)}")
    runtime.weights = quantize_weights(model, recipe)
    return dict(runtime.weights)
