"""Registers lm-eval's ``spiking-hf`` model the moment ``lm_eval.models`` is imported.

Imported at interpreter start by ``spiking_lm_lmeval.pth``: stdlib only and O(microseconds); it imports
neither torch nor lm_eval. lm-eval 0.4.13 has no plugin entry points, so we watch for its model package
and add a lazy placeholder to its registry right after that package has run.
"""

import importlib.abc
import importlib.machinery
import sys

_WATCHED = "lm_eval.models"
_ALIAS = "spiking-hf"
_TARGET = "spiking_lm_plugin.lm_eval_model:SpikingHFLM"


def register() -> None:
    """Add the placeholder to lm-eval's model registry (safe to call more than once)."""
    try:
        from lm_eval.api.registry import model_registry
    except ImportError:
        return
    if _ALIAS not in model_registry:
        model_registry.register(_ALIAS, target=_TARGET)


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        register()


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != _WATCHED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


def install() -> None:
    if _WATCHED in sys.modules:      # lm-eval already imported: register now
        register()
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
