#!/usr/bin/env bash
# On a GPU runner without bubblewrap or nbgrader (and without a package index): unpack the carried
# bubblewrap and wheels, then check the sandbox on the GPU, grade a class sandboxed and without the
# sandbox (same grades? what overhead?), and grade the GPU faults in the sandbox. Results in OUTDIR.
#   bash scripts/sandbox_gpu_check.sh OUTDIR [sandbox|overhead|faults|all]
# Prepare here first: .gpu-carry/deb/ (apt-get download bubblewrap) and .gpu-carry/whl/ (nbgrader's
# wheels for the runner's Python, without what its image already has).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/sandbox-gpu-check}
WHAT=${2:-all}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! command -v bwrap >/dev/null && [ -d .gpu-carry/deb ]; then
  for d in .gpu-carry/deb/bubblewrap_*.deb; do dpkg-deb -x "$d" /tmp/bw; done
  export PATH="/tmp/bw/usr/bin:$PATH"
fi
if ! python3 -c "import nbgrader" 2>/dev/null && [ -d .gpu-carry/whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu-carry/whl/*.whl 2>&1 | grep -v "already exists" || true
  export PYTHONPATH="$PYTHONPATH:/tmp/site" PATH="/tmp/site/bin:$PATH" JUPYTER_PATH=/tmp/site/share/jupyter
fi
python3 -m ipykernel install --prefix /tmp/kernelspec --name python3 >/dev/null 2>&1 \
  && export JUPYTER_PATH="/tmp/kernelspec/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
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
