#!/usr/bin/env bash
# On a machine with one or more GPUs: grade the bundled class on Ray with N GPUs (and, for the
# baseline, one submission after another), recording GPU utilisation with `nvidia-smi dmon`
# beside every run. Each RUN is LABEL:GPUS:CLASS[:MODE[:LIMIT_S]], graded into OUTDIR/class-CLASS/LABEL:
#   bash scripts/multi_gpu_class.sh OUTDIR ray-2gpu:2:56 ray-1gpu:1:56 sequential:1:8:sequential
# MODE is ray-shared (the default: SHARE tasks per GPU, 4 unless set) or sequential; LIMIT_S stops
# a run after that many seconds (it is then left out of the comparison). Runs of one class size
# share a folder, so ray_class_timing.py's summary.txt compares their grades and CSV files.
# Then: python scripts/plot_class_scaling.py OUTDIR (plot and table, docs/class-grading.md).
# On a runner without a package index or bubblewrap, carry either .whl-grading/ (scripts/ray_wheels.sh)
# or .gpu-carry/: deb/ (bubblewrap and its libraries, apt-get download), whl/ (nbgrader's wheels)
# and ray/ (Ray for CPython 3.12 as a .tar.xz of the installed tree: the slimmed wheel of
# ray_wheels.sh unpacked, its three binaries put through `strip --strip-unneeded`; 25 MB).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: multi_gpu_class.sh OUTDIR RUN [RUN ...]}
shift
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! command -v bwrap >/dev/null && [ -d .gpu-carry/deb ]; then
  for d in .gpu-carry/deb/*.deb; do dpkg-deb -x "$d" /tmp/bw; done
  export PATH="/tmp/bw/usr/bin:$PATH" LD_LIBRARY_PATH="/tmp/bw/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
wheels=$(ls .whl-grading/*.whl .gpu-carry/whl/*.whl 2>/dev/null)
if ! python3 -c "import nbgrader" 2>/dev/null && [ -n "$wheels" ]; then
  # shellcheck disable=SC2086
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    $wheels 2>&1 | grep -v "already exists" || true
  export PYTHONPATH="$PYTHONPATH:/tmp/site" PATH="/tmp/site/bin:$PATH" JUPYTER_PATH=/tmp/site/share/jupyter
fi
if ! python3 -c "import ray" 2>/dev/null && ls .gpu-carry/ray/*.tar.xz >/dev/null 2>&1; then
  mkdir -p /tmp/site && tar -xJf .gpu-carry/ray/*.tar.xz -C /tmp/site
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
python3 -m ipykernel install --prefix /tmp/kernelspec --name python3 >/dev/null 2>&1 \
  && export JUPYTER_PATH="/tmp/kernelspec/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
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
