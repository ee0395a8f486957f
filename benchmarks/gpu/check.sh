#!/usr/bin/env bash
# One-shot GPU check of SegDeep: bash benchmarks/gpu/check.sh [--dry-run] [--out FILE]
# Needs PyTorch (CUDA build), nvcc, ninja, numpy, scipy and pytest; nothing is downloaded.
# Python: $PYTHON, else the repository's .venv when present, else python3.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
# nvcc and compute-sanitizer usually live here; torch's extension builder also reads CUDA_HOME.
if [ -d /usr/local/cuda/bin ]; then export PATH="$PATH:/usr/local/cuda/bin"; fi
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export MAX_JOBS="${MAX_JOBS:-$(nproc 2>/dev/null || echo 4)}"
exec "$PY" benchmarks/gpu/check.py "$@"
