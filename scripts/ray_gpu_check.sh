#!/usr/bin/env bash
# On a GPU machine: grade a class of bundled submissions one after another, then on Ray with a
# GPU per task, then with SHARE tasks sharing each GPU; print the wall times, check that all
# three give the same grades and CSV files, and write everything to OUTDIR.
#   bash scripts/ray_gpu_check.sh [OUTDIR] [CLASS_SIZE] [MODES...]
#   (defaults: build/ray-gpu-check, 20, "sequential ray ray-shared"; SHARE=4 in the environment)
# On a machine without a package index, first run `bash scripts/ray_wheels.sh` where pip works
# and carry .whl-grading/: this script installs it into /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/ray-gpu-check}
CLASS=${2:-20}
shift $(( $# > 2 ? 2 : $# ))
MODES=${*:-sequential ray ray-shared}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl-grading ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl-grading/*.whl || exit 1
  # nbgrader runs alembic from PATH; nbconvert finds its feedback templates and the kernel spec
  # through JUPYTER_PATH.
  export PYTHONPATH="$PYTHONPATH:/tmp/site" PATH="/tmp/site/bin:$PATH" JUPYTER_PATH=/tmp/site/share/jupyter
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, ray, nbgrader; print('torch', torch.__version__, 'triton', triton.__version__, 'ray', ray.__version__, 'nbgrader', nbgrader.__version__, 'GPUs', torch.cuda.device_count())" \
  | tee -a "$OUT/gpu.txt" || exit 1
# shellcheck disable=SC2086
python3 scripts/ray_class_timing.py "$OUT" --class-size "$CLASS" --share "${SHARE:-4}" --modes $MODES 2>&1 \
  | tee -a "$OUT/ray-gpu-check.log"
exit "${PIPESTATUS[0]}"
