"""Spiking replacements of the attention, MLP and LM head of LLaMA-family models."""

from .attention import SpikingAttention
from .mlp import SpikingLMHead, SpikingMLP
from .site import SpikeSite, Spikes

__all__ = ["SpikeSite", "Spikes", "SpikingAttention", "SpikingLMHead", "SpikingMLP"]
