"""Where spikes go (docs/DESIGN.md, "Where spikes go"): the site types of a decoder layer plus the head input."""

from __future__ import annotations

LAYER_SITE_TYPES = ("attn_in", "q", "k", "v", "softmax", "o_in", "mlp_in", "gate_act", "up", "down_in")
MODEL_SITE_TYPES = ("head_in",)
ALL_SITE_TYPES = LAYER_SITE_TYPES + MODEL_SITE_TYPES
#: sites the early-spike mask leaves alone (as the paper's released code does: the softmax map)
MASK_EXEMPT_SITE_TYPES = ("softmax",)
#: sites whose consumer is a linear layer: per-channel tau folds into that weight for free
LINEAR_INPUT_SITE_TYPES = ("attn_in", "o_in", "mlp_in", "down_in", "head_in")
#: sites that get a per-channel tau with ``tau="channel"``: at linear inputs it folds into the weight; at
#: q/k/v and the gate-product operands it is a per-channel scale of the analog accumulations S_A(t),
#: already paid for by the per-step scaling MACs; the softmax map keeps one tau per tensor
PER_CHANNEL_SITE_TYPES = LINEAR_INPUT_SITE_TYPES + ("q", "k", "v", "gate_act", "up")
#: sites that get tau headroom by default: on held-out text, values above the calibration maximum make
#: most of the coding error at these sites, and little at q, down_in (Hadamard-rotated) and softmax
#: (bounded by 1), where the lost resolution costs more than the clipping it saves
HEADROOM_SITE_TYPES = ("attn_in", "k", "v", "o_in", "mlp_in", "gate_act", "up", "head_in")
#: model_type -> what the conversion maps onto its modules (README "Supported architectures")
ARCHITECTURES = {
    "llama": "LLaMA 1-3.x (incl. llama3 rope scaling, tied or untied heads), SmolLM2",
    "qwen2": "Qwen2 / Qwen2.5 (q/k/v biases)",
    "mistral": "Mistral (sliding window)",
    "qwen3": "Qwen3 (per-head q/k norms before RoPE)",
    "phi3": "Phi-3 (fused qkv_proj fed by the attention input site; gate_up_proj split into weight views)",
    "olmo2": "OLMo-2 (q/k norms over the projection, norms after the sublayers)",
    "gemma2": "Gemma-2 (GeGLU, attention logit soft-capping, sliding windows, pre/post norms)",
    "gemma3_text": "Gemma-3 text models (GeGLU, per-head q/k norms, sliding windows, pre/post norms)",
}
SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)
#: norms after the attention/MLP sublayers: their weights cannot be folded into a linear, so the
#: residual stream cannot be rotated (``rotation="full"``); the online transform works
POST_NORM_ARCHITECTURES = ("olmo2", "gemma2", "gemma3_text")


def site_type(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def validate_site_types(types) -> tuple[str, ...]:
    types = tuple(types)
    unknown = [t for t in types if t not in ALL_SITE_TYPES]
    if unknown:
        raise ValueError(f"unknown site types {unknown}; choose from {list(ALL_SITE_TYPES)}")
    if not types:
        raise ValueError("at least one site type must be spiked")
    return types
