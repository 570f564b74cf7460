#!/usr/bin/env bash
# Regenerate every table of docs/BENCHMARKS.md (CPU; about 2 hours on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export PYTHONPATH=bench
$PY bench/quality.py --timesteps 6 8 10 --eval-tokens 4096
$PY bench/ablation.py
$PY bench/accuracy.py
$PY bench/fit_throughput.py
$PY bench/bases.py
$PY bench/speed.py
$PY bench/blocked_attention.py
$PY bench/energy.py
$PY bench/energy_baseline.py
$PY bench/spike_budget.py
$PY bench/spike_pareto.py
$PY bench/spike_pareto.py --timesteps 8 --penalties 0.01 0.03 --masked-penalties 0.003 0.01
.venv/bin/spiking-lm convert --model smollm2-135m -T 8 --out bench/results/ckpt-t8 --quiet
$PY bench/lm_eval_throughput.py --checkpoint bench/results/ckpt-t8
$PY bench/scale.py
$PY bench/seed_spread.py
$PY bench/calibration_spread.py
$PY bench/long_windows.py
$PY bench/transform_fallback.py
$PY bench/architectures.py
$PY bench/startup.py
$PY bench/render.py
