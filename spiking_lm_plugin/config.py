"""Configuration dataclasses of a conversion (torchao style: one verb, one config)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .fitting.fit_config import FitConfig
from .layerwise_config import LayerwiseConfig
from .neurons.spec import PRESETS, NeuronSpec, validate_allocation, validate_steps
from .sites import ALL_SITE_TYPES, HEADROOM_SITE_TYPES, site_type, validate_site_types
from .weight_recipe import WeightRecipe, validate_weight_recipe


#: ``tau_headroom="auto"``: this headroom from T = 8 steps up, none below (measured on SmolLM2, see docs/BENCHMARKS.md)
AUTO_HEADROOM = 1.5
AUTO_HEADROOM_MIN_STEPS = 8


@dataclass(frozen=True)
class SpikingConfig:
    """What to convert and how: the one place every default of a recipe lives (the command line, the
    Lightning trainer, the demo and the benchmarks all build one of these; validated once, immutable).

    Attributes:
        timesteps: time steps T per neuron.
        site_timesteps: per-site-type T overriding ``timesteps`` (e.g. ``{"softmax": 8, "gate_act": 8}``): the
            site types that make most of the coding error get more steps, the others keep T. Each T group is
            fitted as its own batched problem; tau headroom ``auto`` follows each site's own T. None: one T.
        grains: number of grains (bases) n <= T.
        neuron: the neuron family, a preset name (multi-grain, single-grain, tied, binary, two-spike, rate,
            ttfs, integer, oat; ``NeuronSpec.preset``).
        allocation: steps per grain: None (uniform), a tuple such as (2, 6), or "search" (Alg. 2).
        tau: "channel" (per input channel where the site feeds a linear layer or a product, per tensor
            elsewhere) or "tensor".
        tau_headroom: tau = headroom x the calibration maximum at ``headroom_sites`` (values above tau
            saturate; held-out text exceeds a calibration maximum). 1.0 is the paper's tau = max; "auto" is
            1.5 for T >= 8 and 1.0 below, where the resolution it costs matters more.
        headroom_sites: the site types that get the headroom.
        rope_pair_tau: with per-channel tau, the two channels of each RoPE pair at q and k share one tau (the
            larger calibration maximum): the rotary embedding moves a pair's norm between its channels as the
            position grows, so text longer than the calibration windows does not clip the channel that
            looked small (docs/DESIGN.md, "Outliers").
        rotation: "none", "online" (an exact orthogonal transform of the down_proj input folded into
            down_proj's weight, so that site is coded where its outliers are spread out) or "full" (also
            the residual stream rotated, RMSNorm weights folded).
        online_transform: the down_proj input transform: "auto" (a Hadamard where one is constructible for
            the size, else the exact seeded Kronecker fallback), "hadamard" (a Hadamard or an error) or
            "random" (the fallback at every size, to measure what it costs).
        prefix: "auto" (PrefixQuant: outlier tokens chosen greedily on calibration data, their KV computed
            once and every input run after them), "none", or a list of token ids.
        prefix_eta: a token is an outlier when its max|x| at a down_proj input exceeds eta times the median.
        prefix_max_tokens: the most prefix tokens the search may choose.
        exclude_outlier_tokens: with a prefix, leave the rare tokens that are still outliers after it out of
            the calibration samples and maxima from the layer where they appear on (they saturate instead
            of setting every tau of the later layers). Without a prefix nothing is left out.
        sites: the site types that spike; the others stay analog.
        calibration_text: the text asset calibrated on (its calibration split).
        calibration_tokens: calibration tokens.
        sequence_length: tokens per calibration window.
        batch_size: windows per calibration forward.
        samples_per_site: reservoir samples kept per site (the fit's N).
        sample_weighting: alpha of the output-aware samples: a per-channel site's fitting samples are drawn with
            probability (tau_c^2 g_c)^alpha for their channel c, g_c the squared weight column (or the other
            factor's mean square) the channel's error is multiplied by downstream, so the fit spends the neuron's
            resolution where the output error is made; 0 = the paper's uniform sample (docs/DESIGN.md,
            "Output-aware samples").
        search_steps: Alg. 2 steps when ``allocation="search"``.
        fit: the fitting schedule and optimizer (``FitConfig``).
        layerwise: None (off) or a ``LayerwiseConfig``: after the per-site fit, tune each block's
            thresholds and tau against the ANN block's output (optional, slower).
        spike_mask: None (off) or k >= 1: the early-spike mask of Appendix D.7, applied after fitting as the
            paper does; every neuron but the softmax map's keeps only its first k spikes per value (the
            released code uses k = 2). Evaluation can switch it (``spiking-hf`` model_arg ``spike_mask``).
        mask_in_fit: with ``spike_mask``, fit the neurons with the mask inside their dynamics, so the
            thresholds learn that only k spikes come (false: the paper's post-hoc mask on neurons fitted
            without it).
        mass_correction: give the attention output the mass the softmax neurons round away: each row's
            1 - sum of its spiked probabilities times the mean spiked value over the keys it may attend to
            (at low T, and in rows longer than the calibration windows, many entries code as 0; docs/DESIGN.md,
            "Attention mass correction"). An evaluation can switch it (``spiking-hf`` ``mass_correction=``).
        bias_correction: after fitting, measure each linear-feeding site's mean coding error per channel on
            calibration windows (the spiking model, in network order) and give it back as a bias of the linear
            it feeds (docs/DESIGN.md, "Bias correction").
        weight_bits: 16 (the model's weights as loaded), 8 or 4: the decoder linears quantized by torchao
            after the rotation folding and before calibration (paper Table 8); embeddings and head stay.
        weight_group_size: one scale per this many input channels of a weight row; None = per output row at
            8 bits and groups of 32 at 4 bits; "channel" = per output row.
        seed: seed of the calibration sampling (and, from the command lines, of the fit).
    """

    timesteps: int = 8
    site_timesteps: dict[str, int] | None = None
    grains: int = 2
    neuron: str = "multi-grain"
    allocation: Any = None
    tau: str = "channel"
    tau_headroom: Any = "auto"
    headroom_sites: tuple[str, ...] = HEADROOM_SITE_TYPES
    rope_pair_tau: bool = True
    rotation: str = "online"
    online_transform: str = "auto"
    prefix: Any = "auto"
    prefix_eta: float = 64.0
    prefix_max_tokens: int = 4
    exclude_outlier_tokens: bool = True
    sites: tuple[str, ...] = ALL_SITE_TYPES
    calibration_text: str = "enwiki-excerpt"
    calibration_tokens: int = 16384
    sequence_length: int = 512
    batch_size: int = 4
    samples_per_site: int = 16384
    sample_weighting: float = 0.0
    search_steps: int = 60
    fit: FitConfig = field(default_factory=FitConfig)
    layerwise: LayerwiseConfig | None = None
    spike_mask: int | None = None
    mask_in_fit: bool = False
    mass_correction: bool = True
    bias_correction: bool = False
    weight_bits: int = 16
    weight_group_size: Any = None
    seed: int = 0

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)      # normalization inside __post_init__ of a frozen dataclass

    def __post_init__(self) -> None:
        if isinstance(self.fit, dict):
            self._set("fit", FitConfig(**self.fit))
        if self.layerwise is True:
            self._set("layerwise", LayerwiseConfig())
        elif isinstance(self.layerwise, dict):
            self._set("layerwise", LayerwiseConfig(**self.layerwise))
        elif self.layerwise is False:
            self._set("layerwise", None)
        elif self.layerwise is not None and not isinstance(self.layerwise, LayerwiseConfig):
            raise ValueError(f"layerwise must be None, True, a dict or a LayerwiseConfig, got {self.layerwise!r}")
        validate_steps(self.timesteps, self.grains)
        self._set("site_timesteps", validate_site_timesteps(self.site_timesteps, self.timesteps))
        if self.neuron not in PRESETS:
            raise ValueError(f"unknown neuron preset {self.neuron!r}; choose one of {sorted(PRESETS)}")
        if self.rotation not in ("none", "online", "full"):
            raise ValueError(f"rotation must be 'none', 'online' or 'full', got {self.rotation!r}")
        if self.online_transform not in ("auto", "hadamard", "random"):
            raise ValueError(f"online_transform must be 'auto', 'hadamard' or 'random', got {self.online_transform!r}")
        if isinstance(self.prefix, (list, tuple)):
            if not all(isinstance(t, int) and t >= 0 for t in self.prefix):
                raise ValueError(f"prefix token ids must be non-negative integers, got {list(self.prefix)}")
            self._set("prefix", list(self.prefix))
        elif self.prefix not in ("auto", "none"):
            raise ValueError(f"prefix must be 'auto', 'none' or a list of token ids, got {self.prefix!r}")
        if self.prefix_eta <= 1 or self.prefix_max_tokens < 0:
            raise ValueError("prefix_eta must be > 1 and prefix_max_tokens >= 0")
        if self.tau not in ("channel", "tensor"):
            raise ValueError(f"tau must be 'channel' or 'tensor', got {self.tau!r}")
        self._set("sites", validate_site_types(self.sites))
        numeric = isinstance(self.tau_headroom, (int, float)) and not isinstance(self.tau_headroom, bool)
        if self.tau_headroom != "auto" and not (numeric and self.tau_headroom >= 1.0):
            raise ValueError("tau_headroom must be 'auto' or a number >= 1 (1 = tau is the calibration maximum), "
                             f"got {self.tau_headroom!r}")
        self._set("headroom_sites", tuple(self.headroom_sites))
        unknown = [t for t in self.headroom_sites if t not in ALL_SITE_TYPES]
        if unknown:
            raise ValueError(f"unknown headroom site types {unknown}; choose from {list(ALL_SITE_TYPES)}")
        if isinstance(self.allocation, (list, tuple)):
            self._set("allocation", validate_allocation(tuple(self.allocation), self.timesteps))
            if len(self.allocation) != self.grains:
                raise ValueError(f"allocation {','.join(map(str, self.allocation))} has {len(self.allocation)} "
                                 f"grains but grains={self.grains}; give one step count per grain")
        elif self.allocation not in (None, "search"):
            raise ValueError(f"allocation must be None, 'search' or a tuple of step counts, got {self.allocation!r}")
        if self.spike_mask is not None and (isinstance(self.spike_mask, bool) or not isinstance(self.spike_mask, int)
                                            or self.spike_mask < 1):
            raise ValueError(f"spike_mask must be None or an integer >= 1 (spikes kept per value), got {self.spike_mask!r}")
        if self.mask_in_fit and self.spike_mask is None:
            raise ValueError("mask_in_fit needs a spike_mask (the k the neurons are fitted for)")
        validate_weight_recipe(self.weight_bits, self.weight_group_size)
        weighting = self.sample_weighting
        numeric = isinstance(weighting, (int, float)) and not isinstance(weighting, bool)
        if not (numeric and 0 <= weighting < float("inf")):
            raise ValueError(f"sample_weighting must be a number >= 0 (0 = uniform samples), got {weighting!r}")
        for name in ("calibration_tokens", "sequence_length", "batch_size", "samples_per_site"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def excludes_outliers(self) -> bool:
        """Whether calibration leaves the residual outlier tokens out (only with a prefix)."""
        if isinstance(self.prefix, list):
            return self.exclude_outlier_tokens and bool(self.prefix)
        return self.exclude_outlier_tokens and self.prefix == "auto" and self.prefix_max_tokens > 0

    @property
    def headroom(self) -> float:
        """The tau headroom this config uses (``"auto"`` resolved for its T)."""
        return self.headroom_at(self.timesteps)

    def headroom_at(self, timesteps: int) -> float:
        """The tau headroom of a site coded with ``timesteps`` steps (``"auto"`` depends on T)."""
        if self.tau_headroom == "auto":
            return AUTO_HEADROOM if timesteps >= AUTO_HEADROOM_MIN_STEPS else 1.0
        return float(self.tau_headroom)

    def timesteps_of(self, site_name: str) -> int:
        """T of one site: its type's entry in ``site_timesteps``, else ``timesteps``."""
        return (self.site_timesteps or {}).get(site_type(site_name), self.timesteps)

    @property
    def mixed_timesteps(self) -> bool:
        return bool(self.site_timesteps)

    @property
    def weight_recipe(self) -> "WeightRecipe | None":
        """The resolved weight recipe (None: 16-bit weights, not quantized)."""
        return WeightRecipe.from_config(self.weight_bits, self.weight_group_size)

    def neuron_spec(self, timesteps: int | None = None) -> NeuronSpec:
        """The neuron family at ``timesteps`` (default T); another T than the config's keeps min(grains, T)
        grains and a uniform allocation."""
        if timesteps is None or timesteps == self.timesteps:
            overrides = {"allocation": self.allocation} if isinstance(self.allocation, tuple) else {}
            return NeuronSpec.preset(self.neuron, self.timesteps, self.grains, **overrides)
        return NeuronSpec.preset(self.neuron, timesteps, min(self.grains, timesteps))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sites"] = list(self.sites)
        out["headroom_sites"] = list(self.headroom_sites)
        out["site_timesteps"] = dict(self.site_timesteps) if self.site_timesteps else None
        if isinstance(self.allocation, tuple):
            out["allocation"] = list(self.allocation)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SpikingConfig":
        data = dict(data)
        data["sites"] = tuple(data.get("sites", ALL_SITE_TYPES))
        data.setdefault("tau_headroom", 1.0)     # checkpoints written before headroom existed used tau = max
        data.setdefault("exclude_outlier_tokens", False)    # nor did they leave outlier tokens out
        data.setdefault("mass_correction", False)
        data.setdefault("bias_correction", False)
        data.setdefault("rope_pair_tau", False)    # checkpoints before it calibrated each channel on its own
        data.setdefault("sample_weighting", 0.0)   # and drew their fitting samples uniformly
        data["headroom_sites"] = tuple(data.get("headroom_sites", HEADROOM_SITE_TYPES))
        if isinstance(data.get("allocation"), list):
            data["allocation"] = tuple(data["allocation"])
        return cls(**data)


def validate_site_timesteps(site_timesteps: Any, timesteps: int) -> dict[str, int] | None:
    """None, or {site type: T >= 1} in site order; entries equal to ``timesteps`` are dropped (one T)."""
    if site_timesteps is None:
        return None
    if not isinstance(site_timesteps, dict):
        raise ValueError(f"site_timesteps must be a mapping of site type to T, got {site_timesteps!r}")
    unknown = [t for t in site_timesteps if t not in ALL_SITE_TYPES]
    if unknown:
        raise ValueError(f"site_timesteps: unknown site types {unknown}; choose from {list(ALL_SITE_TYPES)}")
    out = {}
    for name in ALL_SITE_TYPES:
        if name in site_timesteps:
            value = site_timesteps[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"site_timesteps[{name!r}] must be an integer T >= 1, got {value!r}")
            if value != timesteps:
                out[name] = value
    return out or None
