#!/usr/bin/env bash
# The prepared GPU check (issue 26): make bench at paper settings, Stage 1 and 2 steps of the
# `paper` and `paper-code` presets on generated data of the real sizes, the pseudo-mask pass;
# one JSON, <out>/gpu_check.json (out: $1, else $OUT, else build/gpu_check). Under 8 minutes on
# one H100. GPU_CHECK_REDUCED=1: the same path on the CPU at smoke size (CI);
# GPU_CHECK_STEPS: steps of each stage (100).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
OUT_DIR=${1:-${OUT:-build/gpu_check}}
exec "$PY" -m selftrain_lib.gpu_check --out "$OUT_DIR" ${GPU_CHECK_STEPS:+--steps "$GPU_CHECK_STEPS"}
