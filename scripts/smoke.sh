#!/usr/bin/env bash
# Dependency smoke: a fresh venv with the NEWEST releases setup.py allows (no lock), or with every lower
# bound it declares (OLDEST), then the tests marked `smoke`: tiny LLaMA conversion, fused == timestep,
# KV-cache generation == full forward (prefix on and off), prefix round trip, one lm_eval subprocess,
# the Lightning CLI. A declared range that does not work fails here, not at a user's.
#   usage: bash scripts/smoke.sh newest|oldest
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
which=${1:?usage: smoke.sh newest|oldest}
VENV=.venv-smoke-$which
rm -rf "$VENV"
new_venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q)
ensure_torch "$VENV" "$(lock_pin torch)"
before=$(torch_version "$VENV")
case $which in
  newest)
    "${PIP[@]}" --upgrade pip
    "${PIP[@]}" -e ".[dev]" ;;
  oldest)
    "${PIP[@]}" "$(lock_pin pip)"
    "$VENV/bin/python" scripts/lower_bounds.py > "$VENV/lower-bounds.txt"
    "${PIP[@]}" -c "$VENV/lower-bounds.txt" -e ".[dev]" ;;
  *) echo "smoke.sh: expected newest or oldest, got '$which'" >&2; exit 2 ;;
esac
after=$(torch_version "$VENV")
if [ "$before" != "$after" ]; then
  echo "smoke.sh: installing spiking-lm replaced torch $before with $after" >&2; exit 1
fi
"$VENV/bin/python" -m pip list 2>/dev/null |
  grep -iE '^(torch|torchao|transformers|lm.eval|pytorch-lightning|torchmetrics|jsonargparse|accelerate|safetensors|rich|gguf|matplotlib) ' |
  tr -s ' ' | paste -sd ',' | sed "s/^/smoke ($which): /"
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m smoke tests
