"""Registers lm-eval's ``spiking-hf`` model the moment ``lm_eval.models`` is imported.

Imported at every interpreter start by ``spiking_lm_lmeval.pth``, so it imports nothing at all (not even
``importlib.abc``, which pulls in pathlib, tempfile and re): the finder and loader are plain classes that
follow the import protocol, and the path finder is the one already on ``sys.meta_path``. lm-eval 0.4.x
has no plugin entry points, so we watch for its model package and add a lazy placeholder to its registry
right after that package has run (docs/DESIGN.md, "lm-eval integration").
"""

import sys

_WATCHED = "lm_eval.models"
_ALIAS = "spiking-hf"
_TARGET = "spiking_lm_plugin.lm_eval_model:SpikingHFLM"


def register() -> None:
    """Add the placeholder to lm-eval's model registry (safe to call more than once)."""
    try:
        from lm_eval.api.registry import model_registry
    except ImportError:
        try:                                   # lm-eval 0.4.x before the registry class
            from lm_eval.api.registry import MODEL_REGISTRY, register_model
        except ImportError:
            return
        if _ALIAS not in MODEL_REGISTRY:
            from spiking_lm_plugin.lm_eval_model import SpikingHFLM  # noqa: F401  (registers itself)
        return
    if _ALIAS not in model_registry:
        model_registry.register(_ALIAS, target=_TARGET)


class _RegisteringLoader:
    """Runs the real loader of ``lm_eval.models``, then registers ``spiking-hf``."""

    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        register()


class _Finder:
    """A meta path finder that only wraps the loader of ``lm_eval.models``."""

    @staticmethod
    def _path_finder():
        return next((f for f in sys.meta_path if getattr(f, "__name__", "") == "PathFinder"), None)

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _WATCHED:
            return None
        finder = self._path_finder()
        spec = finder.find_spec(fullname, path) if finder is not None else None
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


def install() -> None:
    if _WATCHED in sys.modules:      # lm-eval already imported: register now
        register()
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
