"""The weight recipe of a conversion: bits and group size (torch-free; quantization itself is in
``weight_quantization``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the ``weight_bits`` a recipe may ask for; 16 = the model's own weights, not quantized
WEIGHT_BITS = (16, 8, 4)
#: group size of 4-bit weights when the recipe gives none (divides every LLaMA-family width we know)
DEFAULT_GROUP_SIZE_4BIT = 32


#: the one line a recipe that needs torchao gives when torchao is not installed
TORCHAO_MISSING = "weight_bits 8 or 4 needs torchao: pip install 'spiking-lm[quant]'"


class WeightRecipeError(ValueError):
    """A weight recipe that does not fit the model (or a model already quantized another way)."""


def validate_weight_recipe(bits: Any, group_size: Any) -> None:
    """Refuse a bad ``weight_bits`` / ``weight_group_size`` pair before anything runs."""
    if isinstance(bits, bool) or bits not in WEIGHT_BITS:
        raise ValueError(f"weight_bits must be one of {', '.join(map(str, WEIGHT_BITS))} (16 = not quantized), "
                         f"got {bits!r}")
    if group_size is None or group_size == "channel":
        return
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"weight_group_size must be None, 'channel' or an integer >= 1, got {group_size!r}")
    if bits == 16:
        raise ValueError("weight_group_size needs weight_bits 8 or 4 (16-bit weights are not quantized)")


@dataclass(frozen=True)
class WeightRecipe:
    """``bits`` per weight, one scale per ``group_size`` input channels of a row (None: per output row)."""

    bits: int
    group_size: int | None

    @classmethod
    def from_config(cls, bits: int, group_size: Any) -> "WeightRecipe | None":
        """The recipe of ``SpikingConfig.weight_bits`` / ``weight_group_size`` (None for 16 bits)."""
        validate_weight_recipe(bits, group_size)
        if bits == 16:
            return None
        if group_size == "channel":
            return cls(bits, None)
        return cls(bits, group_size if group_size is not None else (DEFAULT_GROUP_SIZE_4BIT if bits == 4 else None))

    @classmethod
    def from_record(cls, record: dict) -> "WeightRecipe | None":
        """The recipe of a quantization record (``runtime.weights``, a checkpoint's ``weights``; {}: None)."""
        return cls(record["bits"], record["group_size"]) if record else None

    def describe(self) -> str:
        return f"W{self.bits} " + ("per channel" if self.group_size is None else f"group {self.group_size}")


def describe_weights(recipe: WeightRecipe | None) -> str:
    """``W4 group 32 weights``, or ``16-bit weights`` for none."""
    return "16-bit weights" if recipe is None else f"{recipe.describe()} weights"
