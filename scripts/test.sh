#!/usr/bin/env bash
# Set up and run the whole test suite (CPU only; the first run fetches the offline assets).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
