"""Shared pieces of the benchmarks: the real model, held-out windows, perplexity, output files."""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

from spiking_lm_plugin.assets import text_documents
from spiking_lm_plugin.calibration import token_windows
from spiking_lm_plugin.conversion import build_state, fit, install, tune_layers
from spiking_lm_plugin.energy import EnergyMeter
from spiking_lm_plugin.layerwise import mean_token_nll
from spiking_lm_plugin.loading import load_base_model

OUT = Path(os.environ.get("SPIKING_LM_BENCH_OUT", "bench/results"))


def machine() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {gpu}"


def load(model: str = "smollm2-135m", device: str = "cpu"):
    model, tokenizer, _ = load_base_model(model, device)
    return model, tokenizer


def eval_windows(tokenizer, tokens: int, length: int = 512) -> torch.Tensor:
    docs = [d["text"] for d in text_documents("enwiki-excerpt", "evaluation")]
    return token_windows(tokenizer, docs, tokens, length)


def botchan_windows(tokenizer, tokens: int, length: int = 512) -> torch.Tensor:
    """Held-out Botchan windows: another domain than the enwiki calibration text."""
    return token_windows(tokenizer, [d["text"] for d in text_documents("botchan", "evaluation")], tokens, length)


def held_out_texts(tokenizer, enwiki_tokens: int, botchan_tokens: int) -> dict[str, torch.Tensor]:
    """The two held-out texts of the quality tables: enwiki-excerpt and Botchan (another domain)."""
    return {"enwiki": eval_windows(tokenizer, enwiki_tokens), "botchan": botchan_windows(tokenizer, botchan_tokens)}


def perplexity(model, windows: torch.Tensor, batch: int = 4) -> float:
    """Token-level perplexity over the windows (every window predicts its own tokens 2..L)."""
    return math.exp(mean_token_nll(model, windows, batch))


def fit_and_install(model, calib, config):
    """Fit the neurons of ``config`` on a calibration (all sites at once) and install them; the state, whose
    ``fit`` holds the fitting time (``fit_s``) and losses."""
    result, fit_s = timed(fit, calib.samples, config, False, calib.site_names, calib.fanouts)
    state = build_state(config, calib, result, "smollm2-135m", model.spiking.fingerprint, fit_s)
    install(model, state)
    return state


def fit_and_measure(model, calib, config, windows, layerwise: bool = False):
    """Fit the neurons of ``config`` on a calibration, install them, and return (fused perplexity, state).
    ``state.fit`` holds the fitting time (``fit_s``) and losses; the model is left in ANN mode for the next row."""
    state = fit_and_install(model, calib, config)
    if layerwise:
        tune_layers(model, state, calib.windows, show_progress=False)
    with model.spiking.use(mode="fused"):
        return perplexity(model, windows), state


def energy(model, sample: torch.Tensor) -> tuple[float, float]:
    """(AC count, energy in mJ per token, our convention) of the fused model on one sample."""
    meter = EnergyMeter()
    with torch.no_grad(), model.spiking.use(mode="fused", meter=meter):
        model(sample)
    return meter.ac, meter.energy_j() * 1e3 / sample.numel()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def one_forward(model, windows, mode: str, metered: bool = False) -> float:
    """Seconds of one forward over ``windows`` in ``mode`` (the meter's summary read, as metering needs)."""
    meter = EnergyMeter() if metered else None
    with model.spiking.use(mode=mode, meter=meter):
        sync(str(windows.device))
        t0 = time.perf_counter()
        model(windows)
        if meter is not None:
            meter.summary()          # reading the counts is part of metering
        sync(str(windows.device))
    return time.perf_counter() - t0


def interleaved_medians(model, variants: dict[str, tuple], rounds: int) -> dict[str, float]:
    """Median seconds per forward of each variant ``name -> (windows, mode, metered)``: one warm-up each
    (which compiles the kernels for that shape), then ``rounds`` rounds running every variant in turn, so
    the machine's drift within minutes falls on all of them alike."""
    for windows, mode, metered in variants.values():
        one_forward(model, windows, mode, metered)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (windows, mode, metered) in variants.items():
            times[name].append(one_forward(model, windows, mode, metered))
    return {name: statistics.median(values) for name, values in times.items()}


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def write(name: str, rows: list[dict], meta: dict, quiet: bool = False) -> None:
    """JSON next to a markdown table, both printed and saved under bench/results/."""
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
            "date": date.today().isoformat(), **meta}
    (OUT / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    table = "\n".join(lines)
    text = f"`{meta['command']}` ({meta['machine']}, {meta['date']})\n\n{table}\n"
    (OUT / f"{name}.md").write_text(text)
    if not quiet:
        print(text)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
