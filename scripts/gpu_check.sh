#!/usr/bin/env bash
# Every GPU check in one run, for a machine with CUDA:
#   bash scripts/gpu_check.sh [OUT_DIR]
# In order of importance, each inside what is left of BUDGET_S seconds (default 480):
#   1. the CUDA and bf16 tests (pytest -m cuda);
#   2. the benchmark on the GPU (scripts/benchmark.py --device cuda);
#   3. short Fashion-MNIST training runs on the GPU: bf16-mixed, 32-true, 16-mixed, one-process DDP (NCCL),
#      a population of 100;
#   4. the whole test suite on that machine's interpreter.
# PY=python3 uses an existing interpreter (the project on PYTHONPATH) instead of building .venv.
# OUT_DIR (default $OUT, else outputs/gpu_check) gets a few files: gpu_check.log, machine.txt,
# cuda_tests.txt, benchmark_cuda.json/.txt, train_runs.json, full_suite.txt. Run folders go to RUNS_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-outputs/gpu_check}}
runs=${RUNS_DIR:-/tmp/gpu_check_runs}
mkdir -p "$out" "$runs"
deadline=$(( $(date +%s) + ${BUDGET_S:-480} ))
log="$out/gpu_check.log"
if [ -z "${PY:-}" ]; then
  make .venv/.installed-stamp >/dev/null || { echo "error: building .venv failed (or pass PY=python3)" | tee -a "$log"; exit 1; }
  PY=.venv/bin/python
fi
export PYTHONUNBUFFERED=1

step() { echo "== $(date +%T) $*" | tee -a "$log"; }
# left CAP: seconds for the next step, at most CAP and never past the deadline
left() { local rest=$(( deadline - $(date +%s) )); [ "$rest" -lt "$1" ] && echo "$rest" || echo "$1"; }
bounded() {  # bounded CAP FILE CMD...: run CMD with a time limit, output to FILE, its tail to the log
  local cap; cap=$(left "$1"); local file=$2; shift 2
  if [ "$cap" -le 5 ]; then echo "skipped (no time left): $*" | tee -a "$log"; return; fi
  timeout -k 10 "$cap" "$@" > "$file" 2>&1; local rc=$?  # -k: train.py catches SIGTERM to save
  tail -4 "$file" | tee -a "$log"; echo "exit $rc$([ $rc = 124 ] && echo ' (timed out)')" | tee -a "$log"
}

step "machine"
{ timeout 30 nvidia-smi; timeout -k 5 60 $PY - <<'EOF'
import sys, torch, lightning, hydra
print(sys.version)
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
print("lightning", lightning.__version__, "hydra", hydra.__version__, "cpus", __import__("os").cpu_count())
EOF
} > "$out/machine.txt" 2>&1
tail -3 "$out/machine.txt" | tee -a "$log"

step "1. CUDA and bf16 tests"
bounded 180 "$out/cuda_tests.txt" $PY -m pytest -q -rs -m cuda -p no:cacheprovider tests/

step "2. benchmark on the GPU"
# 5 step and 2 epoch repeats: 132 s on an H200 (the default 15 and 5 took over 240 s there)
bounded 240 "$out/benchmark_cuda.txt" $PY scripts/benchmark.py --device cuda --repeats 5 --epoch-repeats 2 \
  --json "$out/benchmark_cuda.json"

step "3. training runs on the GPU (Fashion-MNIST, 784-100-10, batch 100, 3 epochs)"
names=()
for spec in "bf16:trainer=gpu trainer.precision=bf16-mixed" "fp32:trainer=gpu trainer.precision=32-true" \
            "fp16:trainer=gpu trainer.precision=16-mixed" "ddp1:trainer=ddp trainer.accelerator=gpu trainer.devices=1" \
            "pop100:trainer=gpu population=100"; do
  name=${spec%%:*}; names+=("$name")
  rm -rf "${runs:?}/$name"  # never report an earlier run's metrics.json
  # shellcheck disable=SC2086
  bounded 75 "$runs/$name.log" $PY train.py data=fashion_mnist data.batch_size=100 model.hidden=[100] \
    trainer.max_epochs=3 trainer.enable_progress_bar=false ${spec#*:} hydra.run.dir="$runs/$name"
done
timeout -k 5 60 $PY - "$runs" "$out/train_runs.json" "${names[@]}" <<'EOF'
import json, sys
from pathlib import Path
runs, dest, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
result = {}
for n in names:
    m = runs / n / "metrics.json"
    log = runs / f"{n}.log"
    result[n] = json.loads(m.read_text()) if m.exists() else {"missing": log.read_text()[-3000:] if log.exists() else ""}
    result[n].pop("history", None)
dest.write_text(json.dumps(result, indent=2) + "\n")
for n, m in result.items():
    print(n, m.get("status"), "test/acc", m.get("test/acc"), "+/-", m.get("test/acc_ci95"), "train_seconds", m.get("train_seconds"))
EOF

step "4. the whole test suite"
bounded 240 "$out/full_suite.txt" $PY -m pytest -q -n 8 -p no:cacheprovider tests/

step "done: results in $out"
