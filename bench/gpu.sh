#!/usr/bin/env bash
# The GPU checks in one go, on a machine with a CUDA GPU (at most 10 minutes on one H200): the `gpu`-marked
# tests, then bench/gpu.py's figures (learner MFU at 1B in bf16, vLLM tokens/s, sleep and wake times, IPC weight
# transfer at 1B and 7B). Writes one JSON file (default bench/gpu.json) holding the figures and the tests' summary.
#     bash bench/gpu.sh [OUT.json]
set -u
cd "$(dirname "$0")/.."
out=${1:-bench/gpu.json}
log=$(mktemp)
timeout 300 python -m pytest tests -m gpu -q -p no:cacheprovider 2>&1 | tee "$log"
echo "gpu tests: exit code ${PIPESTATUS[0]}"
timeout 420 python bench/gpu.py --out "$out" --tests-log "$log"
