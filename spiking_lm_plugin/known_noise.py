"""Log lines of dependencies that are known to be harmless here, dropped at the logger that emits them.

With torchao installed, transformers imports it at every model load; on a CPU-only torch build torchao
then logs that its CUDA extensions failed to load (weight-only int8/int4 does not use them), and torch
logs a deprecation of torchao's enum registration. Every `spiking-lm` and `lm_eval` run would print them
before its own output. Only those lines are dropped; anything else the loggers say still shows.
"""

from __future__ import annotations

import logging
import sys


def _cpu_only_torch() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and getattr(torch.version, "cuda", None) is None and not getattr(torch.version, "hip", None)


class _DropKnownNoise(logging.Filter):
    def __init__(self, matches) -> None:
        super().__init__()
        self.matches = matches

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.matches(record.getMessage())


def _torchao_extension(message: str) -> bool:
    return message.startswith("Failed to load ") and ".so" in message and _cpu_only_torch()


def _enum_registration(message: str) -> bool:
    return "is an Enum subclass and is now natively supported by torch.compile" in message


_FILTERS = {"torchao": _torchao_extension, "torch.utils._pytree": _enum_registration}


def drop_known_noise() -> None:
    """Attach the filters (once per process)."""
    for name, matches in _FILTERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownNoise) for f in logger.filters):
            logger.addFilter(_DropKnownNoise(matches))
