#!/usr/bin/env bash
# Build .whl-grading/: the wheels a GPU machine without a package index needs to grade on Ray
# (Ray itself, nbgrader and its dependencies), for CPython 3.12 on x86-64, small enough to carry
# (the full Ray wheel alone is 76 MiB; slimmed, 38 MiB).
#   bash scripts/ray_wheels.sh            # here, once; then carry .whl-grading to the GPU machine
# The nbgrader wheels come from .whl/ when it exists (as for docs/gpu-results.md), else from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
RAY_VERSION=${RAY_VERSION:-2.60.0}
OUT=.whl-grading
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
          --platform manylinux1_x86_64)
grep -qx '/.whl-grading/' .git/info/exclude 2>/dev/null || echo '/.whl-grading/' >> .git/info/exclude
rm -rf "$OUT" && mkdir -p "$OUT"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Ray, without what grading never loads: the Java jars, the dashboard's web client, and the
# libraries for data, training, tuning, serving and LLMs. Its own dependencies (click, msgpack,
# protobuf, pyyaml, requests, aiohttp, ...) are already on the GPU image.
python3 -m pip download -q --no-deps "${PLATFORM[@]}" -d "$tmp/ray" "ray==$RAY_VERSION"
python3 scripts/slim_wheel.py "$tmp"/ray/ray-*.whl "$OUT" ray/jars/ ray/rllib/ ray/data/ ray/serve/ \
  ray/tune/ ray/train/ ray/llm/ ray/dashboard/client/

# nbgrader and its dependencies, without nbgrader's bundled documentation.
if [ -d .whl ] && ls .whl/nbgrader-*.whl >/dev/null 2>&1; then
  cp .whl/*.whl "$tmp/" 2>/dev/null
else
  python3 -m pip download -q "${PLATFORM[@]}" -d "$tmp" "nbgrader==0.9.6"
fi
for w in "$tmp"/*.whl; do
  case "$(basename "$w")" in
    nbgrader-*) python3 scripts/slim_wheel.py "$w" "$OUT" nbgrader/docs/ ;;
    ray-*) ;;
    *) cp "$w" "$OUT/" ;;
  esac
done
du -sh "$OUT"
echo "carry $OUT; on the GPU machine: bash scripts/ray_gpu_check.sh OUTDIR (it installs $OUT into /tmp/site)"
