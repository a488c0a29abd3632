#!/usr/bin/env bash
# Every GPU check in one run, for a machine with CUDA (the device tool gives about 15 minutes):
#   bash scripts/gpu_check.sh [OUT_DIR]
# The CUDA and bf16 tests, a short CUDA training run with bf16-mixed and one in float32, and the
# benchmark on CUDA. Results go to OUT_DIR (default $OUT, else outputs/gpu_check).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-outputs/gpu_check}}
mkdir -p "$out"
make .venv/.installed-stamp >/dev/null
py=.venv/bin/python
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
$py -m pytest -q -m cuda tests/ 2>&1 | tee "$out/cuda_tests.txt" | tail -3
for precision in bf16-mixed 32-true; do
  $py train.py trainer=gpu trainer.precision=$precision data=fashion_mnist data.batch_size=100 trainer.max_epochs=3 \
    hydra.run.dir="$out/train_$precision" 2>&1 | tail -2
done
$py scripts/benchmark.py --device cuda --json "$out/benchmark_cuda.json" 2>&1 | tee "$out/benchmark_cuda.txt" | tail -20
echo "results in $out"
