#!/usr/bin/env bash
# Create .venv and install spiking-lm with exactly the tested versions of constraints.txt (the lock).
# A torch already in .venv (a newer or CUDA build) is kept; otherwise the lock's CPU build is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || new_venv "$VENV"
"$VENV/bin/python" -m pip install -q "$(lock_pin pip)" "$(lock_pin setuptools)" "$(lock_pin wheel)"
ensure_torch "$VENV" "$(lock_pin torch)"
# the lock without its torch line, so an installed torch is never replaced
grep -vi '^torch==' "$LOCK" > "$VENV/lock-without-torch.txt"
"$VENV/bin/python" -m pip install -q --no-build-isolation -c "$VENV/lock-without-torch.txt" -e ".[dev]"
