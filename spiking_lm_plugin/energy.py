"""Energy meter (paper eq. 18, 59, 60): MACs and ACs counted from the spikes actually fired.

Rules (per forward; the ANN is counted by the same code with every site analog):
- Linear fed by spikes: AC = nnz(spikes) * out_features (each spike adds one weight column);
  MAC = T * out_features per token (scaling each step's accumulation by d_t; per-channel tau is folded
  into the weight, so it costs nothing). Fed by an analog input: MAC = in * out per token.
- Activation-activation product A B = sum_t (S_A(t) B_t + A_t S_B(t) - A_t B_t):
  AC = sum_t nnz(A_t) n_B + nnz(B_t) n_A + nnz(A_t and B_t) (fan-outs n over the pairs the mask allows);
  MAC = 2 T per output element (the two per-step scalings). Analog: MAC = one per multiply.
- Norms, softmax and SiLU act on integrated inputs: a fixed number of MACs per element, the same for ANN
  and SNN (``NONLINEAR_MACS``). Embedding lookups are free. Neuron membrane updates are not counted
  (as in the paper).
- Energy = E_MAC * MAC + E_AC * AC (45 nm: 4.6 pJ, 0.9 pJ); optional read/write model (Appendix D.7):
  every operand read and result write of 32 bits costs ``e_rw`` (5 pJ), a spike 1/32 of that.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

#: fixed MACs per element of the nonlinearities (the same in the ANN and the SNN); tanh-GELU has a few more
NONLINEAR_MACS = {"rmsnorm": 4, "softmax": 4, "silu": 4, "gelu_tanh": 6}


@dataclass
class EnergyConstants:
    e_mac_pj: float = 4.6
    e_ac_pj: float = 0.9
    e_rw_pj: float = 5.0
    read_write: bool = False


@dataclass
class SiteStats:
    spikes: float = 0.0
    slots: float = 0.0        # elements * T: what the firing rate divides by

    @property
    def firing_rate(self) -> float:
        return self.spikes / self.slots if self.slots else 0.0


@dataclass
class EnergyMeter:
    constants: EnergyConstants = field(default_factory=EnergyConstants)
    enabled: bool = True
    mac: float = 0.0
    ac: float = 0.0
    reads_writes_bits: float = 0.0
    ann_mac: float = 0.0      # what the ANN spends on the same ops (all MACs): the saving's baseline
    ann_rw_bits: float = 0.0
    tokens: int = 0
    by_kind: dict = field(default_factory=lambda: defaultdict(lambda: [0.0, 0.0]))   # kind -> [mac, ac]
    sites: dict = field(default_factory=lambda: defaultdict(SiteStats))

    # ------------------------------------------------------------------ recording
    def reset(self) -> None:
        self.mac = self.ac = self.reads_writes_bits = self.ann_mac = self.ann_rw_bits = 0.0
        self.tokens = 0
        self.by_kind.clear()
        self.sites.clear()

    def add(self, kind: str, mac: float = 0.0, ac: float = 0.0, rw_bits: float = 0.0,
            ann_mac: float | None = None, ann_rw_bits: float | None = None) -> None:
        """Record one op; ``ann_mac`` is the same op's cost in the ANN (defaults to ``mac``: analog op)."""
        self.ann_mac += float(mac if ann_mac is None else ann_mac)
        self.ann_rw_bits += float(rw_bits if ann_rw_bits is None else ann_rw_bits)
        self.mac += float(mac)
        self.ac += float(ac)
        self.reads_writes_bits += float(rw_bits)
        entry = self.by_kind[kind]
        entry[0] += float(mac)
        entry[1] += float(ac)

    def record_site(self, name: str, spikes, numel: int, timesteps: int) -> None:
        stats = self.sites[name]
        stats.spikes += float(spikes)
        stats.slots += float(numel * timesteps)

    # ------------------------------------------------------------------ reading
    def energy_j(self) -> float:
        c = self.constants
        joules = (self.mac * c.e_mac_pj + self.ac * c.e_ac_pj) * 1e-12
        if c.read_write:
            joules += self.reads_writes_bits / 32.0 * c.e_rw_pj * 1e-12
        return joules

    def ann_energy_j(self) -> float:
        c = self.constants
        joules = self.ann_mac * c.e_mac_pj * 1e-12
        if c.read_write:
            joules += self.ann_rw_bits / 32.0 * c.e_rw_pj * 1e-12
        return joules

    def firing_rate(self) -> float:
        spikes = sum(s.spikes for s in self.sites.values())
        slots = sum(s.slots for s in self.sites.values())
        return spikes / slots if slots else 0.0

    def summary(self) -> dict:
        per = max(self.tokens, 1)
        return {
            "tokens": self.tokens,
            "mac": self.mac,
            "ac": self.ac,
            "energy_j": self.energy_j(),
            "mac_per_token": self.mac / per,
            "ac_per_token": self.ac / per,
            "energy_j_per_token": self.energy_j() / per,
            "firing_rate": self.firing_rate(),
            "ann_mac": self.ann_mac,
            "ann_energy_j": self.ann_energy_j(),
            "ann_energy_j_per_token": self.ann_energy_j() / per,
            "saving_vs_ann": 1.0 - self.energy_j() / self.ann_energy_j() if self.ann_mac else 0.0,
            "e_mac_pj": self.constants.e_mac_pj,
            "e_ac_pj": self.constants.e_ac_pj,
            "read_write": self.constants.read_write,
            "by_kind": {k: {"mac": v[0], "ac": v[1]} for k, v in sorted(self.by_kind.items())},
            "site_firing_rate": {k: v.firing_rate for k, v in sorted(self.sites.items())},
        }


# ---------------------------------------------------------------------- counting rules
def nnz(t: torch.Tensor) -> torch.Tensor:
    """Spike count of signed frames: sum of magnitudes (= nonzeros for binary spikes)."""
    return t.abs().sum(dtype=torch.float64)


def count_linear(meter: EnergyMeter, kind: str, events, tokens: int, in_features: int, out_features: int,
                 timesteps: int | None, bias: bool) -> None:
    """A linear layer; ``timesteps=None`` means an analog input."""
    bias_adds = tokens * out_features if bias else 0
    if timesteps is None:
        meter.add(kind, mac=tokens * in_features * out_features + bias_adds,
                  rw_bits=32 * tokens * (in_features + out_features))
        return
    meter.add(kind, mac=timesteps * tokens * out_features, ac=float(events) * out_features + bias_adds,
              rw_bits=float(events) + 32 * tokens * out_features,
              ann_mac=tokens * in_features * out_features + bias_adds,
              ann_rw_bits=32 * tokens * (in_features + out_features))


def count_elementwise_product(meter: EnergyMeter, kind: str, a_frames, b_frames, numel: int,
                              timesteps: int | None, a_events=None, b_events=None, both=None) -> None:
    """SiLU(gate) * up: n_A = n_B = 1, AC = nnz(A_t) + nnz(B_t) + nnz(A_t and B_t) summed over t.
    ``*_events`` / ``both``: the operands' spike counts and coincidences when the caller already has them
    (then no frames are needed). ``timesteps``: T of the spiking operand(s), None when both are analog.
    One operand analog: each spike of the other adds the analog value (one AC per spike) and each step's
    accumulation is scaled once (T MACs per element), the rule of a linear layer fed by spikes."""
    if timesteps is None:
        meter.add(kind, mac=numel, rw_bits=32 * 3 * numel)
        return
    a_spiking = a_frames is not None or a_events is not None
    b_spiking = b_frames is not None or b_events is not None
    if a_spiking != b_spiking:
        frames, events = (a_frames, a_events) if a_spiking else (b_frames, b_events)
        spikes = nnz(frames) if events is None else float(events)
        meter.add(kind, mac=timesteps * numel, ac=spikes, rw_bits=spikes + 32 * 2 * numel,
                  ann_mac=numel, ann_rw_bits=32 * 3 * numel)
        return
    na = nnz(a_frames) if a_events is None else float(a_events)
    nb = nnz(b_frames) if b_events is None else float(b_events)
    if both is None:
        both = torch.mul(a_frames, b_frames).abs_().sum(dtype=torch.float64)
    meter.add(kind, mac=2 * timesteps * numel, ac=na + nb + both, rw_bits=float(na + nb) + 32 * numel,
              ann_mac=numel, ann_rw_bits=32 * 3 * numel)


def _allowed_counts(allowed: torch.Tensor, heads: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(pairs over all heads, keys per query [B, 1|H, L], queries per key [B, 1|H, S]) of a bool mask."""
    a = allowed.to(torch.float32)
    per_head = heads if allowed.shape[1] == 1 else 1
    return float(a.sum(dtype=torch.float64)) * per_head, a.sum(-1), a.sum(-2)


def _grouped(frames: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """[T, B, H, ...] -> [T, B, Hkv, G, ...]: query heads grouped by the key/value head they read."""
    t, b, h = frames.shape[:3]
    return frames.reshape(t, b, kv_heads, h // kv_heads, *frames.shape[3:])


def _intervals(allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(first, end) key index per query row [B, 1, L] when every row of a head-shared mask allows one
    contiguous run of keys (causal, sliding window, left padding, prefix); else None."""
    if allowed.shape[1] != 1:
        return None
    s = allowed.shape[-1]
    idx = torch.arange(s, device=allowed.device)
    count = allowed.sum(-1)
    first = torch.where(allowed, idx, s).amin(-1)
    end = torch.where(allowed, idx + 1, 0).amax(-1)
    contiguous = (count == 0) | (end - first == count)
    if not bool(contiguous.all()):
        return None
    first = torch.where(count == 0, 0, first)
    return first, torch.where(count == 0, 0, end)


def _pair_products(qa: torch.Tensor, ka: torch.Tensor, allowed: torch.Tensor, heads: int) -> torch.Tensor:
    """sum over t and allowed (query, key) pairs of |Q_t[l]| . |K_t[s]|. With interval masks: prefix sums of
    |K_t| over keys (O(T L D) per head); else the explicit [T, L, S] products."""
    kv_heads = ka.shape[2]
    groups = heads // kv_heads
    bounds = _intervals(allowed)
    if bounds is not None:
        first, end = bounds                                            # [B, 1, L]
        q_group = _grouped(qa, kv_heads).sum(3)                        # [T, B, Hkv, L, D]
        csum = torch.cat([torch.zeros_like(ka[..., :1, :]), ka.cumsum(-2)], dim=-2)   # [T, B, Hkv, S+1, D]
        gather = lambda i: torch.gather(  # noqa: E731
            csum, -2, i[None, :, :, :, None].expand(csum.shape[0], csum.shape[1], kv_heads, -1, csum.shape[-1]))
        return (q_group * (gather(end) - gather(first))).sum(dtype=torch.float64)
    if allowed.shape[1] == 1:
        both = torch.matmul(_grouped(qa, kv_heads).sum(3), ka.transpose(-1, -2))    # [T, B, Hkv, L, S]
    else:   # a per-head mask: the ungrouped product
        both = torch.matmul(qa, ka.repeat_interleave(groups, dim=2).transpose(-1, -2))
    return (both * allowed.to(torch.float32)).sum(dtype=torch.float64)


def count_scores(meter: EnergyMeter, kind: str, q_frames, k_frames, allowed: torch.Tensor, heads: int,
                 head_dim: int, timesteps: int | None) -> None:
    """Q K^T over the allowed (query, key) pairs. Frames: Q [T, B, H, L, D], K [T, B, Hkv, S, D] (not
    repeated: a key spike fans out to every query head of its group); ``allowed`` [B, 1|H, L, S] bool.
    AC = sum_t nnz(Q_t) n_K + nnz(K_t) n_Q + sum over allowed pairs of |Q_t| . |K_t|."""
    if q_frames is not None:   # a batch-shared mask counts once per sequence
        allowed = allowed.expand(q_frames.shape[1], *allowed.shape[1:])
    n_out, keys_per_query, queries_per_key = _allowed_counts(allowed, heads)
    if timesteps is None:
        meter.add(kind, mac=n_out * head_dim, rw_bits=32 * 3 * n_out)
        return
    qa, ka = q_frames.abs().to(torch.float32), k_frames.abs().to(torch.float32)
    kv_heads = ka.shape[2]
    groups = heads // kv_heads
    term_q = (qa.sum(-1) * keys_per_query).sum(dtype=torch.float64)
    qpk = queries_per_key if allowed.shape[1] == 1 else _grouped(queries_per_key[None], kv_heads)[0].sum(2)
    term_k = (ka.sum(-1) * qpk * (groups if allowed.shape[1] == 1 else 1)).sum(dtype=torch.float64)
    term_both = _pair_products(qa, ka, allowed, heads)
    meter.add(kind, mac=2 * timesteps * n_out, ac=term_q + term_k + term_both,
              rw_bits=float(qa.sum(dtype=torch.float64) + ka.sum(dtype=torch.float64)) + 32 * n_out,
              ann_mac=n_out * head_dim, ann_rw_bits=32 * 3 * n_out)


def count_attn_values(meter: EnergyMeter, kind: str, p_frames, v_frames, allowed: torch.Tensor, heads: int,
                      head_dim: int, timesteps: int | None, p_columns: torch.Tensor | None = None) -> None:
    """P V. Frames: P [T, B, H, L, S] (zero where masked) or, equivalently for the count, ``p_columns``
    [T, B, H, S] = P's spikes summed over queries; V [T, B, Hkv, S, D] (not repeated).
    AC = sum_t nnz(P_t) D + nnz(V_t[s]) (queries reading s) + sum_{l,s} |P_t[l,s]| nnz(V_t[s])."""
    if v_frames is not None:   # a batch-shared mask counts once per sequence
        allowed = allowed.expand(v_frames.shape[1], *allowed.shape[1:])
    n_pairs, _, queries_per_key = _allowed_counts(allowed, heads)
    if timesteps is None:
        meter.add(kind, mac=n_pairs * head_dim, rw_bits=32 * 3 * n_pairs)
        return
    va = v_frames.abs().to(torch.float32)
    kv_heads = va.shape[2]
    groups = heads // kv_heads
    if p_columns is None:   # softmax outputs are >= 0: their frames are the magnitudes
        p_columns = p_frames.to(torch.float32).sum(-2)
    n_out = float(p_columns.shape[1] * heads * allowed.shape[-2] * head_dim)
    v_rows = va.sum(-1)                                            # [T, B, Hkv, S]
    qpk = queries_per_key if allowed.shape[1] == 1 else _grouped(queries_per_key[None], kv_heads)[0].sum(2)
    term_v = (v_rows * qpk * (groups if allowed.shape[1] == 1 else 1)).sum(dtype=torch.float64)
    p_per_key = _grouped(p_columns.to(torch.float32), kv_heads).sum(3)      # [T, B, Hkv, S]
    term_both = (p_per_key * v_rows).sum(dtype=torch.float64)
    nnz_p = float(p_per_key.sum(dtype=torch.float64))
    meter.add(kind, mac=2 * timesteps * n_out, ac=nnz_p * head_dim + term_v + term_both,
              rw_bits=nnz_p + float(va.sum(dtype=torch.float64)) + 32 * n_out, ann_mac=n_pairs * head_dim,
              ann_rw_bits=32 * 3 * n_pairs)


def count_nonlinear(meter: EnergyMeter, kind: str, op: str, numel: int) -> None:
    meter.add(kind, mac=NONLINEAR_MACS[op] * numel, rw_bits=32 * 2 * numel)


def count_hadamard(meter: EnergyMeter, numel: int, macs_per_element: int) -> None:
    """Online transform on analog values: log2(p) butterfly stages plus an m-term dot product per element
    for a size m x p (``OnlineTransform.macs_per_element``: 19 for 1536 = 12 x 128, 37 for 14336 = 28 x 512);
    counted as MACs in both the ANN and the SNN."""
    meter.add("hadamard", mac=numel * macs_per_element, rw_bits=32 * 2 * numel)
