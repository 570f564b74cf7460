"""``calibrate``: the stage between ``prepare`` and ``fit`` (docs/DESIGN.md, "Pipeline")."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..config import SpikingConfig
from ..model_surgery import prepare, selected_sites
from ..prefix import install_prefix
from ..runtime import runtime_of
from .fanout import site_fanouts
from .normalize import normalized_samples
from .output_gains import channel_gains
from .prefix_choice import bos_token_id, resolve_prefix
from .recording import record_activations
from .reservoir import SiteReservoir
from .windows import calibration_windows


@dataclass
class Calibration:
    """Normalized samples of every selected site, ready for the batched fit, and what produced them."""

    samples: torch.Tensor                     # [sites, N], u = |x| / tau
    taus: dict[str, torch.Tensor]
    site_names: list[str]
    tokens: int
    seconds: float
    prefix: list[int] = field(default_factory=list)
    bos_token_id: int | None = None
    prefix_search: dict = field(default_factory=dict)
    windows: torch.Tensor | None = None       # the calibration token windows (layer-wise calibration reuses them)
    reservoirs: dict[str, SiteReservoir] | None = None   # the raw samples, to re-normalize for another recipe
    transforms: dict[str, str] = field(default_factory=dict)   # down_proj input size -> online transform used
    outlier_tokens_left_out: int | None = None   # None: the recipe keeps every token
    fanouts: dict[str, float] = field(default_factory=dict)   # outputs one spike of each site feeds
    weights: dict = field(default_factory=dict)   # the weight recipe applied (quantize_weights' record; {}: none)
    #: per site, each channel's output gain (``output_gains``): what output-aware samples are drawn by
    gains: dict[str, torch.Tensor] = field(default_factory=dict)

    def for_config(self, config: SpikingConfig) -> "Calibration":
        """The same calibration normalized for ``config`` (another tau granularity or headroom, e.g. another T
        under ``tau_headroom="auto"``); the forward pass is not repeated."""
        if self.reservoirs is None:
            raise ValueError("this calibration kept no raw samples (loaded from a cache?); calibrate again")
        if config.sample_weighting and not self.gains:
            raise ValueError("this calibration has no channel gains (it ran with sample_weighting=0); calibrate "
                             "with sample_weighting > 0 to draw output-aware samples from it")
        samples, taus = normalized_samples(self.reservoirs, config, self.gains)
        return replace(self, samples=samples, taus=taus)


def calibrate(model: nn.Module, config: SpikingConfig, calibration=None, tokenizer=None,
              show_progress: bool = True) -> Calibration:
    """Resolve and install the prefix, then sample every selected site of the prepared model over
    calibration text (``prepare`` runs first if it has not).

    calibration: a LongTensor of token windows [n, L], a list of strings, or None for the
    ``config.calibration_text`` asset's calibration split (needs ``tokenizer``).
    """
    t0 = time.perf_counter()
    transforms = prepare(model, config)
    names = selected_sites(model, config)
    windows = calibration_windows(calibration, tokenizer, config.calibration_text, config.calibration_tokens,
                                  config.sequence_length)
    bos = bos_token_id(model, tokenizer)
    prefix, search = resolve_prefix(model, config, windows, tokenizer, bos)
    install_prefix(model, prefix, bos)
    recording = record_activations(model, windows, names, config.samples_per_site, config.batch_size,
                                   config.seed, show_progress,
                                   config.prefix_eta if config.excludes_outliers else None)
    # the gains read every weight (and undo the down_proj transform): only when the recipe draws by them
    gains = channel_gains(model, recording.reservoirs) if config.sample_weighting else {}
    samples, taus = normalized_samples(recording.reservoirs, config, gains)
    fanouts = site_fanouts(model, names, int(windows.shape[-1]), len(prefix))
    return Calibration(samples, taus, names, int(windows.numel()), time.perf_counter() - t0, prefix, bos,
                       search, windows, recording.reservoirs, transforms, recording.outlier_tokens_left_out, fanouts,
                       dict(runtime_of(model).weights), gains)
