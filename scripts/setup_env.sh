#!/usr/bin/env bash
# Create .venv (CPU torch from the local wheel cache when available) and install spiking-lm into it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned to the CPU build this machine kind ships (a plain `torch` would pull a 5 GB CUDA build)
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
