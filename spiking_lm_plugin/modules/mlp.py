"""Spiking gated MLP: sites at the input (shared by gate/up), SiLU(gate), up, and the down_proj input.

Both operands of the gate product are spiked (the reference code leaves ``up`` analog; we do not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..energy import HadamardOp, NonlinearOp, product_op
from ..runtime import SpikingRuntime
from .block import SpikingBlock
from .linear import split_linear
from ..neurons.kernels import coincidences
from .site import SpikeSite, clock_steps
from .spike_ops import nonlinearity_steps, product


#: the gate activations of the supported gated MLPs: SiLU (SwiGLU) and tanh-approximated GELU (GeGLU)
GATE_ACTIVATIONS = {"silu": F.silu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}


def gate_activation(act: nn.Module | None, layer: int) -> str:
    """Which supported activation ``act`` computes, found by evaluating it (class names vary by release)."""
    if act is None:
        return "silu"
    probe = torch.linspace(-6, 6, 97, dtype=torch.float64)
    with torch.no_grad():
        out = act(probe)
    for name, fn in GATE_ACTIVATIONS.items():
        if torch.allclose(out, fn(probe), rtol=1e-6, atol=1e-6):
            return name
    raise ValueError(f"layer {layer}: unsupported MLP activation {type(act).__name__}; spiking-lm supports "
                     f"gated MLPs with {' or '.join(GATE_ACTIVATIONS)}")


class SpikingMLP(SpikingBlock):
    def __init__(self, mlp: nn.Module, layer: int, runtime: SpikingRuntime) -> None:
        super().__init__()
        self.activation = gate_activation(getattr(mlp, "act_fn", getattr(mlp, "activation_fn", None)), layer)
        self.act = GATE_ACTIVATIONS[self.activation]
        if hasattr(mlp, "gate_up_proj"):                # Phi-3: one fused projection, gate rows first
            inter = mlp.gate_up_proj.out_features // 2
            mlp.gate_proj, mlp.up_proj = split_linear(mlp.gate_up_proj, [inter, inter])
        self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj
        self.runtime = runtime
        self.layer = layer
        self.online_transform = None      # an OnlineTransform, set by model_surgery.apply_rotation
        hidden, inter = self.gate_proj.in_features, self.gate_proj.out_features
        prefix = f"layers.{layer}."
        self.sites = nn.ModuleDict({
            "mlp_in": SpikeSite(prefix + "mlp_in", hidden, runtime),
            "gate_act": SpikeSite(prefix + "gate_act", inter, runtime),
            "up": SpikeSite(prefix + "up", inter, runtime),
            "down_in": SpikeSite(prefix + "down_in", inter, runtime),
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        metering, timestep = self.metering, self.runtime.timestep
        rows = self._counted_rows(x)
        tokens = self._tokens(x, rows)
        if metering:
            self._emit(NonlinearOp("rmsnorm", self._elements(x, rows)))
        xs = self._site("mlp_in", x, need_frames=False, rows=rows)
        if timestep and not xs.analog:
            steps = self._linear_steps(self.gate_proj, xs, "gate_proj", tokens)
            act = nonlinearity_steps(self.act, steps).sum(0).to(x.dtype)
        else:
            act = self.act(self._linear(self.gate_proj, xs, "gate_proj", tokens))
        up = self._linear(self.up_proj, xs, "up_proj", tokens)
        spiking = [self.runtime.spiking and self.sites[n].ready for n in ("gate_act", "up")]
        # the fused count needs no frames (coincidences come from a kernel) unless one operand is analog
        one_clock = self.sites["gate_act"].timesteps == self.sites["up"].timesteps
        frames = timestep or (metering and (spiking[0] != spiking[1] or not one_clock))
        a = self._site("gate_act", act, frames, rows=rows)
        b = self._site("up", up, frames, rows=rows)
        elements = self._elements(act, rows)
        if metering:
            self._emit(NonlinearOp(self.activation, elements))
            both = None
            if all(spiking) and one_clock and not timestep:
                both = coincidences(act, self.sites["gate_act"], up, self.sites["up"], rows)
            steps = clock_steps(a, b)
            a_frames = a.frames if rows is None or a.frames is None else a.frames * rows[..., None]
            self._emit(product_op("gate_product", elements, steps, a_frames, b.frames,
                                  None if a.analog else a.events, None if b.analog else b.events, both))
        prod = product(a, b, torch.mul, timestep)
        if self.online_transform is not None:
            prod = self.online_transform.apply(prod)
            if metering:
                self._emit(HadamardOp("hadamard", self.online_transform.macs_per_element, elements))
        p = self._site("down_in", prod, need_frames=False, rows=rows)
        return self._linear(self.down_proj, p, "down_proj", tokens)


class SpikingLMHead(SpikingBlock):
    """The final norm's output is spiked before lm_head."""

    def __init__(self, head: nn.Linear, runtime: SpikingRuntime) -> None:
        super().__init__()
        self.linear = head
        self.runtime = runtime
        self.sites = nn.ModuleDict({"head_in": SpikeSite("head_in", head.in_features, runtime)})

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self._counted_rows(x)
        if self.metering:
            self._emit(NonlinearOp("rmsnorm", self._elements(x, rows)))
        xs = self._site("head_in", x, need_frames=False, rows=rows)
        return self._linear(self.linear, xs, "lm_head", self._tokens(x, rows))
