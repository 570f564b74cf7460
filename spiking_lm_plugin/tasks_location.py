"""Where the packaged lm-eval task YAML lives (for ``--include_path``)."""

from __future__ import annotations

from pathlib import Path


def tasks_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("spiking_lm_plugin.tasks")))
