#!/usr/bin/env bash
# On a GPU runner: the whole test suite (GPU tests included), the kernel's error report and
# the benchmark, with logs and results written to OUTDIR (default build/gpu-check).
#   bash scripts/gpu_check.sh [OUTDIR] [tests|bench|all]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/gpu-check}
WHAT=${2:-all}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, numpy; print('torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__)" | tee -a "$OUT/gpu.txt"
status=0
if [ "$WHAT" = tests ] || [ "$WHAT" = all ]; then
  python3 -m pytest -q -ra -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest.log" || status=1
  python3 scripts/error_report.py --out "$OUT/errors.json" 2>&1 | tee "$OUT/errors.log" || status=1
  python3 scripts/backward_tolerances.py "$OUT" --kernel --lengths 256 1024 4096 --kernel-lengths 1000 4096 \
    2>&1 | tee "$OUT/backward_tolerances.log" || status=1
  python3 scripts/backward_tolerances_window.py "$OUT" --kernel --lengths 256 2048 --kernel-lengths 1000 4096 \
    2>&1 | tee "$OUT/backward_tolerances_window.log" || status=1
fi
if [ "$WHAT" = bench ] || [ "$WHAT" = all ]; then
  python3 -m autograder bench --out "$OUT" 2>&1 | tee "$OUT/bench.log" || status=1
  # Problem 2b's softmax kernel: GB/s against torch.softmax and the GPU's bandwidth (problem2b.json).
  python3 -m autograder bench --problem problem2b --out "$OUT" 2>&1 | tee "$OUT/bench_problem2b.log" || status=1
  python3 -m autograder bench --problem problem7 --out "$OUT" 2>&1 | tee "$OUT/bench-problem7.log" || status=1
  python3 -m autograder bench --problem problem8 --out "$OUT" 2>&1 | tee "$OUT/bench-problem8.log" || status=1
fi
exit $status
