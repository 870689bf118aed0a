#!/usr/bin/env bash
# A paper-scale FQL row on a fresh machine in one command: install (jax's GPU build where nvidia-smi finds a GPU),
# regenerate the data on every core, train 8 seeds x 1M steps with evaluations in background CPU processes, and write
# the rows and a timing breakdown (setup, data, load, compile, train, evaluate) with their provenance.
#   bash benchmarks/paper_row.sh [--out results] [--task ...] [--seeds 8]     (see benchmarks/paper_row.py --help)
# FQL_SCALE=ci runs the same steps small on a CPU (the test suite does, with --steps and --episodes).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s.%N)
jax_build=${JAX:-$(command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo cuda12 || echo cpu)}
make venv JAX="$jax_build" PYTHON="${PYTHON:-python3}"
setup=$(awk "BEGIN {print $(date +%s.%N) - $start}")
exec .venv/bin/python benchmarks/paper_row.py --setup-seconds "$setup" "$@"
