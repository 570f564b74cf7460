"""Op events: what a spiking wrapper observed while it computed (docs/DESIGN.md, "Energy").

An event names one op and carries its shape (the fields that stay fixed, which form its key) and its
counts (tokens, elements, spikes, coincidences: the fields marked additive). Events of the same key add
up field by field, so a meter keeps one running event per key and any cost model can price the total:
every cost rule is linear in the additive fields. Counts may be Python numbers or 0-d tensors (summed on
the device, read once when a report is made).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from functools import cache
from typing import Any, Union

import torch

Count = Union[float, int, torch.Tensor]


def additive(default: Count = 0.0) -> Any:
    return field(default=default, metadata={"additive": True})


@cache
def _split_fields(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(key fields, additive fields) of an event class."""
    key = tuple(f.name for f in fields(cls) if not f.metadata.get("additive"))
    return key, tuple(f.name for f in fields(cls) if f.metadata.get("additive"))


@dataclass(frozen=True)
class OpEvent:
    """Base: ``kind`` names the op in reports (``q_proj``, ``gate_product``, ``softmax``, ...), ``layer``
    the decoder layer it ran in (-1: outside the layers, e.g. lm_head)."""

    kind: str
    layer: int = field(default=-1, kw_only=True)

    def key(self) -> tuple:
        return (type(self).__name__,) + tuple(getattr(self, name) for name in _split_fields(type(self))[0])

    def merged(self, other: "OpEvent") -> "OpEvent":
        return replace(self, **{name: getattr(self, name) + getattr(other, name)
                                for name in _split_fields(type(self))[1]})

    def counts(self) -> "OpEvent":
        """The same event with every count read as a float (one device sync per field)."""
        return replace(self, **{name: float(getattr(self, name)) for name in _split_fields(type(self))[1]})


@dataclass(frozen=True)
class LinearOp(OpEvent):
    """y = W x (+ b) over ``tokens`` rows; ``timesteps`` is None for an analog input, else the T of
    the spike train feeding it, whose nonzero spikes are ``spikes``; ``weight_bits`` is None for weights
    in the model's own float format, else their quantized width."""

    in_features: int = 0
    out_features: int = 0
    bias: bool = False
    timesteps: int | None = None
    tokens: Count = additive()
    spikes: Count = additive()
    weight_bits: int | None = None


@dataclass(frozen=True)
class ProductOp(OpEvent):
    """Elementwise A * B over ``numel`` outputs; ``spiking_operands`` of the two are spike trains of
    ``timesteps`` steps with ``spikes_a`` / ``spikes_b`` spikes and ``coincidences`` = sum_t nnz(A_t and B_t)."""

    spiking_operands: int = 0
    timesteps: int | None = None
    numel: Count = additive()
    spikes_a: Count = additive()
    spikes_b: Count = additive()
    coincidences: Count = additive()


@dataclass(frozen=True)
class ScoresOp(OpEvent):
    """Q K^T over the ``pairs`` allowed (query, key, head) triples, ``head_dim`` terms each. Spiking:
    ``query_fanout`` = sum_t nnz(Q_t[l]) x keys of l, ``key_fanout`` = sum_t nnz(K_t[s]) x queries of s,
    ``coincidences`` = sum over allowed pairs of |Q_t[l]| . |K_t[s]|; ``*_spikes`` the operands' spikes."""

    head_dim: int = 0
    timesteps: int | None = None
    pairs: Count = additive()
    query_fanout: Count = additive()
    key_fanout: Count = additive()
    coincidences: Count = additive()
    query_spikes: Count = additive()
    key_spikes: Count = additive()
    #: the same statistics over the full L x S rectangle (a convention that ignores the causal mask)
    full_pairs: Count = additive()
    query_fanout_full: Count = additive()
    key_fanout_full: Count = additive()
    coincidences_full: Count = additive()


@dataclass(frozen=True)
class ValuesOp(OpEvent):
    """P V: ``pairs`` allowed (query, key, head) triples, ``outputs`` = output elements. Spiking:
    ``prob_spikes`` = nnz(P) (each fans out to ``head_dim`` outputs), ``value_fanout`` = sum_t nnz(V_t[s])
    x queries of s, ``coincidences`` = sum_{l,s} |P_t[l,s]| nnz(V_t[s]); ``value_spikes`` = nnz(V)."""

    head_dim: int = 0
    timesteps: int | None = None
    pairs: Count = additive()
    outputs: Count = additive()
    prob_spikes: Count = additive()
    value_fanout: Count = additive()
    coincidences: Count = additive()
    value_spikes: Count = additive()
    #: over the full L x S rectangle (masked probabilities are 0, so they add no spikes or coincidences)
    full_pairs: Count = additive()
    value_fanout_full: Count = additive()


@dataclass(frozen=True)
class NonlinearOp(OpEvent):
    """A norm, softmax or gate activation on integrated inputs (the same op in the ANN and the SNN);
    ``kind`` is its name in ``NONLINEAR_MACS``."""

    numel: Count = additive()


@dataclass(frozen=True)
class SoftmaxOp(OpEvent):
    """The attention softmax on integrated scores: ``pairs`` allowed entries of ``full_pairs``."""

    pairs: Count = additive()
    full_pairs: Count = additive()


@dataclass(frozen=True)
class HadamardOp(OpEvent):
    """The online transform on analog values, ``macs_per_element`` from its size's factorization."""

    macs_per_element: int = 0
    numel: Count = additive()


@dataclass(frozen=True)
class SiteFired(OpEvent):
    """A site's neurons ran ``slots`` element-steps (real elements x T: masked attention entries are not
    neurons) and fired ``spikes`` spikes; ``kind`` is the site's name; ``masked``: under the early-spike mask."""

    masked: bool = False
    spikes: Count = additive()
    slots: Count = additive()


@dataclass(frozen=True)
class TokensSeen(OpEvent):
    """One forward's tokens (what per-token figures divide by)."""

    tokens: Count = additive()
