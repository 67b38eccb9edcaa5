#!/usr/bin/env bash
# On a machine with one or more GPUs: grade the bundled class on Ray with N GPUs (and, for the
# baseline, one submission after another), recording GPU utilisation with `nvidia-smi dmon`
# beside every run. Each RUN is LABEL:GPUS:CLASS[:MODE[:LIMIT_S]], graded into OUTDIR/class-CLASS/LABEL:
#   bash scripts/multi_gpu_class.sh OUTDIR ray-2gpu:2:56 ray-1gpu:1:56 sequential:1:8:sequential
# MODE is ray-shared (the default: SHARE tasks per GPU, 4 unless set) or sequential; LIMIT_S stops
# a run after that many seconds (it is then left out of the comparison). Runs of one class size
# share a folder, so ray_class_timing.py's summary.txt compares their grades and CSV files.
# Then: python scripts/plot_class_scaling.py OUTDIR (plot and table, docs/class-grading.md).
# On a runner without a package index or bubblewrap, carry .gpu-carry/ or .whl-grading/
# (scripts/gpu_runner_env.sh says what goes in them).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: multi_gpu_class.sh OUTDIR RUN [RUN ...]}
shift
mkdir -p "$OUT"
source scripts/gpu_runner_env.sh
{ nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv
  echo "CPU cores: $(nproc)"
  bwrap --version
  python3 -c "import torch, triton, ray, nbgrader; print('torch', torch.__version__, 'triton', triton.__version__, 'ray', ray.__version__, 'nbgrader', nbgrader.__version__, 'GPUs', torch.cuda.device_count())"
} 2>&1 | tee "$OUT/versions.txt"
status=0
for spec in "$@"; do
  IFS=: read -r label gpus class mode limit <<<"$spec"
  mode=${mode:-ray-shared}
  dir="$OUT/class-$class"
  mkdir -p "$dir"
  # One line per GPU per second: SM and memory utilisation, with a timestamp.
  nvidia-smi dmon -s u -o T -d 1 > "$dir/$label.dmon" 2>&1 &
  dmon=$!
  echo "== $label: $mode, $gpus GPU(s), class of $class, started $(date -u +%T)"
  date +%s.%N > "$dir/$label.start"
  timeout "${limit:-100000}" python3 scripts/ray_class_timing.py "$dir" --class-size "$class" --modes "$mode" \
    --num-gpus "$gpus" --share "${SHARE:-4}" --label "$label" > "$dir/$label.log" 2>&1
  rc=$?
  kill "$dmon" 2>/dev/null
  # When each submission was recorded (its done marker), also for a run stopped by LIMIT_S.
  find "$dir/$label/course/autograded" -name .course-graded -printf '%T@ %P\n' 2>/dev/null | sort -n > "$dir/$label.done"
  grep -v "^\[\|it/s\]\|s/it\]" "$dir/$label.log" | tail -25
  [ "$rc" -eq 0 ] || { echo "== $label exited $rc"; status=1; }
done
exit $status
