#!/usr/bin/env bash
# On a GPU runner without bubblewrap or nbgrader (and without a package index): unpack the carried
# bubblewrap and wheels, then check the sandbox on the GPU, grade a class sandboxed and without the
# sandbox (same grades? what overhead?), and grade the GPU faults in the sandbox. Results in OUTDIR.
#   bash scripts/sandbox_gpu_check.sh OUTDIR [sandbox|overhead|faults|all]
# Prepare here first: .gpu-carry/ (scripts/gpu_runner_env.sh says what goes in it).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/sandbox-gpu-check}
WHAT=${2:-all}
mkdir -p "$OUT"
source scripts/gpu_runner_env.sh
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  bwrap --version
  python3 -c "import torch, triton, nbgrader; print('torch', torch.__version__, 'triton', triton.__version__, 'nbgrader', nbgrader.__version__)"
} 2>&1 | tee "$OUT/versions.txt"
status=0
if [ "$WHAT" = sandbox ] || [ "$WHAT" = all ]; then
  python3 -m pytest -q -ra -p no:cacheprovider tests/test_sandbox.py 2>&1 | tee "$OUT/test_sandbox.log" || status=1
fi
if [ "$WHAT" = overhead ] || [ "$WHAT" = all ]; then
  python3 scripts/sandbox_overhead.py "$OUT/overhead" ${SAMPLES:+--samples $SAMPLES} > "$OUT/overhead.log" 2>&1 || status=1
  grep -v "^\[" "$OUT/overhead.log" | tail -20
fi
if [ "$WHAT" = faults ] || [ "$WHAT" = all ]; then
  COURSE_CELL_TIMEOUT_S=60 python3 -m pytest -q -ra -s -p no:cacheprovider tests/test_gpu_faults.py 2>&1 \
    | tee "$OUT/gpu-faults.log" || status=1
fi
exit $status
