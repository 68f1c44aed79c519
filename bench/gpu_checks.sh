#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one go, for a machine that has one (CI never does):
#   1. the CUDA tests (metrics on GPU tensors; every method 3 steps on the bf16 + channels_last fast path;
#      resume equals uninterrupted on CUDA),
#   2. bench/train_step.py: the paper model's pss step, fp32 vs bf16 + channels_last vs torch.compile,
#   3. bench/jobs_bench.py --devices cuda:0,cpu: a demo PSS run launched from the app's job service on the GPU
#      and on the CPU, wall time and ratio.
# Usage, from the repository root: bash bench/gpu_checks.sh [OUT_DIR]   (logs go to OUT_DIR, default /tmp/gpu-checks)
set -uo pipefail
out=${1:-/tmp/gpu-checks}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
"$python" -m pytest -q -p no:cacheprovider tests/test_metrics.py tests/test_engine.py -k cuda 2>&1 | tail -n 15 \
    | tee "$out/tests.txt"
"$python" bench/train_step.py --steps 20 --warmup 5 --compile 2>&1 | tee "$out/train_step.txt"
"$python" bench/jobs_bench.py --devices cuda:0,cpu --device-steps 200 2>&1 | tee "$out/jobs_devices.txt"
