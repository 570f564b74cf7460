"""``spiking-lm report``: where a converted model spends its spikes, as a picture and a table.

One held-out sample through the fused execution with the meter on; the PNG shows the firing rate per
layer x site type and each (layer, op)'s share of all ACs (docs/DESIGN.md, "Energy")."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .energy import EnergyConstants, EnergyMeter, cost_model
from .sites import ALL_SITE_TYPES

#: the ops that spend ACs, in network order (the columns of the AC-share map)
AC_OPS = ("q_proj", "k_proj", "v_proj", "qkv_proj", "qk", "pv", "o_proj", "gate_proj", "up_proj", "gate_product",
          "down_proj", "lm_head")


def measure(model: Any, ids: torch.Tensor, convention: str = "ours") -> EnergyMeter:
    meter = EnergyMeter(EnergyConstants(read_write=True), cost_model=cost_model(convention))
    with torch.no_grad(), model.spiking.use(mode="fused", meter=meter):
        model(ids)
    return meter


def maps(meter: EnergyMeter, layers: int) -> dict[str, Any]:
    """Firing rate [layer, site type] and AC share [layer, op] (the head counted as one more row)."""
    site_types = list(ALL_SITE_TYPES)
    rates = torch.full((layers + 1, len(site_types)), float("nan"))
    for name, stats in meter.sites.items():
        parts = name.split(".")
        row = int(parts[1]) if parts[0] == "layers" else layers
        rates[row, site_types.index(parts[-1])] = stats.firing_rate
    by_layer = meter.by_layer()
    ops = [op for op in AC_OPS if any(op in kinds for kinds in by_layer.values())]
    share = torch.zeros(layers + 1, len(ops))
    for layer, kinds in by_layer.items():
        for kind, (_, ac) in kinds.items():
            if kind in ops:
                share[layer if layer >= 0 else layers, ops.index(kind)] += ac
    total = float(share.sum()) or 1.0
    return {"site_types": site_types, "rates": rates, "ops": ops, "ac_share": share / total}


def write_png(data: dict[str, Any], title: str, path: Path) -> None:
    """Two heat maps side by side, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rates"].shape[0]
    labels = [str(i) for i in range(rows - 1)] + ["head"]
    fig, axes = plt.subplots(1, 2, figsize=(13, max(4.0, 0.28 * rows + 2)))
    from matplotlib.colors import LogNorm

    share = data["ac_share"]
    # the head's share dwarfs each layer's: a log scale keeps the layers readable
    floor = float(share[share > 0].min()) if bool((share > 0).any()) else 1e-6
    log_share = LogNorm(vmin=floor, vmax=max(float(share.max()), floor * 10))
    for ax, values, columns, name, norm in (
            (axes[0], data["rates"], data["site_types"], "firing rate per slot", None),
            (axes[1], share.clamp(min=floor), data["ops"], "share of all ACs (log scale)", log_share)):
        image = ax.imshow(values.numpy(), aspect="auto", cmap="viridis", interpolation="nearest", norm=norm)
        ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(rows), labels, fontsize=7)
        ax.set_ylabel("layer")
        ax.set_title(name)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def run_report(model_name: str, checkpoint: str, out: str, tokens: int = 512, text: str = "enwiki-excerpt",
               spike_mask: int | None | Any = ..., convention: str = "ours", device: str = "cpu") -> dict[str, Any]:
    """Load ``checkpoint`` onto ``model_name``, meter one ``tokens``-long held-out sample, write the PNG;
    returns the meter's summary."""
    from .assets import text_documents
    from .calibration import token_windows
    from .checkpoint import load
    from .checkpoint_files import read_meta, verify_tensors
    from .loading import load_base_model

    verify_tensors(checkpoint, read_meta(checkpoint))           # a bad checkpoint fails before the model loads
    if not str(out).endswith(".png"):
        raise ValueError(f"--out must name a .png file, got {out}")
    model, tokenizer, _ = load_base_model(model_name, device)
    load(model, checkpoint)
    if spike_mask is not ...:
        model.spiking.spike_mask = spike_mask
    ids = token_windows(tokenizer, [d["text"] for d in text_documents(text, "evaluation")], tokens, tokens)[:1]
    meter = measure(model, ids.to(device), convention)
    summary = meter.summary()
    mask = model.spiking.spike_mask
    write_png(maps(meter, model.config.num_hidden_layers),
              f"{Path(checkpoint).name}: {tokens} held-out tokens, fused, mask {mask or 'off'}, "
              f"saving vs ANN {summary['saving_vs_ann']:.1%} ({convention})", Path(out))
    return summary
