"""The calibration stage (docs/DESIGN.md, "Calibration"): token windows, the prefix, the recording forward
with its outlier accounting, bounded reservoirs and the normalization into fitting samples.

Names load on first use (the reservoir and the stage import torch).
"""

from importlib import import_module

_LAZY = {
    "Calibration": ".stage", "calibrate": ".stage",
    "calibration_windows": ".windows", "token_windows": ".windows",
    "Recording": ".recording", "record_activations": ".recording", "record_batch": ".recording",
    "OutlierFilter": ".recording",
    "normalized_samples": ".normalize",
    "resolve_prefix": ".prefix_choice",
    "SiteReservoir": ".reservoir",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
