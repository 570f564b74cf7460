"""Surrogate gradients for the Heaviside step H (paper Alg. 1, h/theta phase).

Kept apart from the neuron dynamics (spikingjelly style): the dynamics take any callable
``surrogate(z) -> spikes`` whose forward is the exact step and whose backward is smooth.
"""

from __future__ import annotations

import torch


class _SigmoidHeaviside(torch.autograd.Function):
    """Forward H(z); backward dH/dz ~ beta sig(beta z)(1 - sig(beta z))."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, beta: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.beta = beta
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        sig = torch.sigmoid(ctx.beta * z)
        return grad_output * ctx.beta * sig * (1 - sig), None


class SigmoidSurrogate:
    """Sigmoid surrogate of width ``1/beta`` in units of tau (z = (v - theta) / tau)."""

    def __init__(self, beta: float = 10.0) -> None:
        if beta <= 0:
            raise ValueError(f"surrogate beta must be > 0, got {beta}")
        self.beta = float(beta)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return _SigmoidHeaviside.apply(z, self.beta)

    def __repr__(self) -> str:
        return f"SigmoidSurrogate(beta={self.beta})"


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        return grad_output


class StraightThroughSurrogate:
    """Identity backward (STE); a cheap alternative for ablations."""

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return _StraightThrough.apply(z)

    def __repr__(self) -> str:
        return "StraightThroughSurrogate()"
