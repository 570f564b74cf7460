#!/usr/bin/env bash
# The main job on a fresh machine: set up, convert SmolLM2-135M (T=8, 2 grains), evaluate ANN vs spiking.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/spiking-lm demo "$@"
