#!/usr/bin/env bash
# The GPU rows in one run, for a session whose task is lent a GPU machine (device tool):
#   run: bash bench/gpu.sh        (results in $OUT there, else bench/results; gpu.md goes in BENCHMARKS)
# The device image has torch and transformers but no network: the project runs from the working tree
# (its CPU lock does not apply there), and missing wheels travel in .whl/ (carry it; see the device README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PY" bench/gpu.py --device cuda --out "${OUT:-bench/results}" "$@"
