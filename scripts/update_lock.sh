#!/usr/bin/env bash
# Refresh constraints.txt: resolve the newest releases setup.py allows in a fresh venv (torch: the lock's
# CPU build, or TORCH_PIN=torch==X), run the whole suite there, and only then write the new lock.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
VENV=.venv-lock
rm -rf "$VENV"
new_venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
ensure_torch "$VENV" "${TORCH_PIN:-$(lock_pin torch)}"
"$VENV/bin/python" -m pip install -q --no-build-isolation -e ".[dev]"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests
{
  echo "# The tested set the README commands install (scripts/setup_env.sh). Regenerate with"
  echo "# scripts/update_lock.sh, which resolves the newest allowed releases and runs the suite first."
  echo "# Resolved $(date -u +%Y-%m-%d) on Python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())')."
  "$VENV/bin/python" -m pip freeze --all --exclude-editable | grep -viE '^(-e |spiking-lm)' | sort -f
} > "$LOCK.new"
mv "$LOCK.new" "$LOCK"
echo "wrote $LOCK ($(grep -vc '^#' "$LOCK") pins)"
