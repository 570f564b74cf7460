"""``spiking-hf``: lm-eval's HFLM running a converted spiking model, with energy reporting.

    lm_eval --model spiking-hf --model_args pretrained=smollm2-135m,spiking=ckpt/,mode=fused --tasks ...

``spiking=none`` evaluates the ANN through the same wrappers and energy meter (all MACs).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from .assets import resolve_model
from .checkpoint import load
from .checkpoint_files import CheckpointError, read_meta, verify_tensors
from .counted_positions import ExpectedInputs, expected_inputs
from .energy import EnergyConstants, EnergyMeter, cost_model
from .model_surgery import attach
from .weight_quantization import apply_weight_recipe
from .weight_recipe import WeightRecipe

#: ``analog``: the analog reference (same prefix and rotation as the checkpoint, every site analog)
MODES = ("fused", "timestep", "analog")


class MeteredLoglikelihood(float):
    """A rolling log-likelihood that carries its own request's energy (``.energy``): the energy tasks'
    metric functions read it from the result they are given, so nothing is keyed by document text."""

    energy: dict[str, float]

    def __new__(cls, value: float, energy: dict[str, float]) -> "MeteredLoglikelihood":
        obj = super().__new__(cls, value)
        obj.energy = energy
        return obj

    def __reduce__(self):
        return (MeteredLoglikelihood, (float(self), self.energy))


def _under_lm_eval_cli() -> bool:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return Path(sys.argv[0]).name in ("lm_eval", "lm-eval") or getattr(spec, "name", "") == "lm_eval.__main__"


def _refuse(exc: Exception) -> NoReturn:
    """Under the ``lm_eval`` command (which prints a traceback for any exception from a model's
    constructor): the one line and exit status 2. From Python: the exception itself."""
    if _under_lm_eval_cli():
        print(f"spiking-hf: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    raise exc


def _check_base_config(pretrained: Any, meta: dict, checkpoint: str) -> None:
    """Refuse a checkpoint for another architecture or depth from the base's config alone (no weights)."""
    if not isinstance(pretrained, str) or not (Path(pretrained) / "config.json").is_file():
        return                                   # hub ids and model objects: the fingerprint check decides
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(pretrained)
    base = meta["base_model"]
    found = (getattr(config, "model_type", None), getattr(config, "num_hidden_layers", None))
    if (base.get("architecture"), base.get("num_layers")) != found:
        raise CheckpointError(f"checkpoint {checkpoint} was made for base model {base['name']!r} "
                              f"({base.get('architecture')}, {base.get('num_layers')} layers), but {pretrained} "
                              f"is a {found[0]} with {found[1]} layers")


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "ann"))


def _spike_mask(value: Any) -> int | None:
    """``spike_mask=``: k >= 1 keeps the first k spikes per value; 0 / none / off switches the mask off."""
    if isinstance(value, str) and value.strip().lower() in ("none", "off", ""):
        return None
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"spike_mask must be an integer >= 1, or 0 / none to switch it off, got {value!r}") from None
    if k < 0:
        raise ValueError(f"spike_mask must be an integer >= 1, or 0 / none to switch it off, got {value!r}")
    return k or None


def _switch(name: str, value: Any) -> bool:
    """A true/false model_arg (lm-eval passes ``name=true`` as a string or a bool)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "on", "yes"):
        return True
    if text in ("false", "0", "off", "no", "none"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


_UNSET: Any = object()


def _weight_recipe(bits: Any, group_size: Any) -> "WeightRecipe | None":
    """The recipe of ``weight_bits=`` / ``weight_group_size=`` (None: 16 bits); ``_UNSET`` when neither is given."""
    if bits is None and group_size is None:
        return _UNSET
    try:
        bits = 16 if bits is None else int(bits)
    except (TypeError, ValueError):
        raise ValueError(f"weight_bits must be 16, 8 or 4, got {bits!r}") from None
    if isinstance(group_size, str):
        text = group_size.strip().lower()
        if text in ("none", ""):
            group_size = None
        elif text != "channel":
            try:
                group_size = int(text)
            except ValueError:
                raise ValueError(f"weight_group_size must be an integer or 'channel', got {group_size!r}") from None
        else:
            group_size = text
    return WeightRecipe.from_config(bits, group_size)


def _check_weight_bits(given: Any, meta: dict, checkpoint: str) -> None:
    """A checkpoint's neurons were fitted on its recipe's weights: another ``weight_bits`` is refused."""
    if given is _UNSET:
        return
    config = meta.get("config", {})
    stored = WeightRecipe.from_config(config.get("weight_bits", 16), config.get("weight_group_size"))
    if stored != given:
        def name(recipe: WeightRecipe | None) -> str:
            return "16-bit weights" if recipe is None else recipe.describe()
        raise ValueError(f"checkpoint {checkpoint} was fitted on {name(stored)}, not {name(given)}: "
                         "its neurons code the activations of those weights (drop weight_bits= to use its recipe)")


@register_model("spiking-hf")
class SpikingHFLM(HFLM):
    """HFLM plus ``spiking=<checkpoint dir>|none``, ``mode=fused|timestep|analog``, ``spike_mask=K|0``
    (the early-spike mask: the checkpoint's recipe unless given), ``mass_correction=true|false`` (the
    attention mass correction: the checkpoint's recipe unless given), ``weight_bits=16|8|4`` and
    ``weight_group_size=`` (the ANN's weight recipe with ``spiking=none``; a checkpoint's must match it),
    ``energy_convention=ours|paper`` and energy
    constants (``e_mac``/``e_ac``/``e_rw``/``e_neuron`` in pJ, ``read_write``; unset ones keep
    ``EnergyConstants``' defaults). Every HFLM argument keeps working."""

    def __init__(self, pretrained: Any = "smollm2-135m", spiking: str | None = None, mode: str = "fused",
                 e_mac: float | None = None, e_ac: float | None = None, read_write: bool | None = None,
                 e_rw: float | None = None, energy: bool = True, spike_mask: Any = _UNSET,
                 mass_correction: Any = _UNSET, e_neuron: float | None = None, energy_convention: str = "ours",
                 weight_bits: Any = None, weight_group_size: Any = None, **kwargs: Any) -> None:
        try:
            if mode not in MODES:
                raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
            weights = _weight_recipe(weight_bits, weight_group_size)
            mask = _UNSET if spike_mask is _UNSET else _spike_mask(spike_mask)
            mass = _UNSET if mass_correction is _UNSET else _switch("mass_correction", mass_correction)
            costs = cost_model(energy_convention)
            self.spiking_checkpoint = None if _is_none(spiking) else str(spiking)
            if isinstance(pretrained, str):
                pretrained = resolve_model(pretrained)
            if self.spiking_checkpoint is not None:      # everything checkable before the base weights load
                meta = read_meta(self.spiking_checkpoint)
                verify_tensors(self.spiking_checkpoint, meta)
                _check_base_config(pretrained, meta, self.spiking_checkpoint)
                _check_weight_bits(weights, meta, self.spiking_checkpoint)
        except ValueError as exc:
            _refuse(exc)
        kwargs.setdefault("dtype", "float32")
        super().__init__(pretrained=pretrained, **kwargs)
        model = self._model
        if self.spiking_checkpoint is not None:
            try:
                load(model, self.spiking_checkpoint, mode=mode)
            except ValueError as exc:
                _refuse(exc)
            self.spiking_mode = mode
            if mask is not _UNSET:
                model.spiking.spike_mask = mask
            if mass is not _UNSET:
                model.spiking.mass_correction = mass
        else:
            attach(model).set_mode("ann")
            if weights is not _UNSET:
                try:
                    apply_weight_recipe(model, weights)
                except ValueError as exc:
                    _refuse(exc)
            self.spiking_mode = "ann"
        given = {"e_mac_pj": e_mac, "e_ac_pj": e_ac, "e_rw_pj": e_rw, "e_neuron_pj": e_neuron, "read_write": read_write}
        constants = EnergyConstants(**{k: (bool(v) if k == "read_write" else float(v))
                                       for k, v in given.items() if v is not None})
        self.meter = EnergyMeter(constants, enabled=bool(energy), cost_model=costs)
        model.spiking.meter = self.meter

    _expected: ExpectedInputs | None = None
    _rolling: bool = False

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        """HFLM's, with the inputs it will feed known to ``_model_call`` so padding (and a rolling window's
        re-processed context) is left out of the energy (``counted_positions``)."""
        if not self.meter.enabled or self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        self._expected = expected_inputs(requests, self.max_length, scored_only=self._rolling)
        try:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        finally:
            self._expected = None

    def _model_call(self, inps, attn_mask=None, labels=None):
        if self._expected is None or attn_mask is not None:
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        with self._model.spiking.use(counted_tokens=self._expected.positions(inps)):
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        """One request at a time, so each request's energy is known exactly; it travels on the result.
        Its tokens are the document's: each is counted once, in the window that scores it."""
        results = []
        for request in requests:
            before = self.meter.summary()
            self._rolling = True
            try:
                (value,) = super().loglikelihood_rolling([request], disable_tqdm=True)
            finally:
                self._rolling = False
            after = self.meter.summary()
            tokens = max(after["tokens"] - before["tokens"], 1)
            results.append(MeteredLoglikelihood(value, {
                "tokens": after["tokens"] - before["tokens"],
                "energy_uj_per_token": (after["energy_j"] - before["energy_j"]) / tokens * 1e6,
                "ac_per_token": (after["ac"] - before["ac"]) / tokens,
                "mac_per_token": (after["mac"] - before["mac"]) / tokens,
            }))
        return results

    def energy_report(self) -> dict[str, Any]:
        report = self.meter.summary()
        report["mode"] = self.spiking_mode
        report["spike_mask"] = self._model.spiking.spike_mask
        report["mass_correction"] = self._model.spiking.mass_correction
        report["checkpoint"] = self.spiking_checkpoint
        return report

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["spiking"] = self.energy_report()
        _print_energy_table(info["spiking"])
        return info


def _print_energy_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    mask = report.get("spike_mask")
    table = Table(title=f"spiking-hf energy ({report['mode']}, {report['convention']} convention"
                        f"{f', spike mask {mask}' if mask else ''})")
    per = max(report["tokens"], 1)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    rows = [
        ("tokens", f"{report['tokens']:,}"),
        ("MAC / token", f"{report['mac_per_token']:.4g}"),
        ("AC / token", f"{report['ac_per_token']:.4g}"),
        ("energy / token (uJ)", f"{report['energy_j_per_token'] * 1e6:.4g}"),
        ("  of it neurons / read-write (uJ)",
         f"{report['neuron_j'] / per * 1e6:.4g} / {report['read_write_j'] / per * 1e6:.4g}"),
        ("ANN energy / token (uJ)", f"{report['ann_energy_j_per_token'] * 1e6:.4g}"),
        ("saving vs ANN", f"{report['saving_vs_ann']:.1%}"),
        ("energy total (J)", f"{report['energy_j']:.4g}"),
        ("firing rate per slot / per fan-out", f"{report['firing_rate']:.4f} / {report['firing_rate_fanout']:.4f}"),
    ]
    for row in rows:
        table.add_row(*row)
    Console(stderr=True).print(table)
