# Sourced (`source scripts/gpu_runner_env.sh`) by the scripts that grade on a GPU runner without a
# package index: it puts what the runner lacks on the paths, from what the caller carried.
#   .gpu-carry/deb/   bubblewrap and its libraries (apt-get download), unpacked with dpkg-deb
#   .gpu-carry/whl/ or .whl-grading/   nbgrader's wheels for the runner's Python (scripts/ray_wheels.sh)
#   .gpu-carry/ray/   Ray for CPython 3.12 as a .tar.xz of the installed tree (stripped, 25 MB)
# Nothing is installed where the runner already has it. Run from the repository root.
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! command -v bwrap >/dev/null && [ -d .gpu-carry/deb ]; then
  for d in .gpu-carry/deb/*.deb; do dpkg-deb -x "$d" /tmp/bw; done
  export PATH="/tmp/bw/usr/bin:$PATH" LD_LIBRARY_PATH="/tmp/bw/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# Not jsonschema's optional IRI checker: it builds a grammar in every process that imports jsonschema
# (2.5 s each; see course.sh).
_course_wheels=$(ls .whl-grading/*.whl .gpu-carry/whl/*.whl 2>/dev/null | grep -v rfc3987_syntax)
if ! python3 -c "import nbgrader" 2>/dev/null && [ -n "$_course_wheels" ]; then
  # shellcheck disable=SC2086
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    $_course_wheels 2>&1 | grep -v "already exists" || true
  export PYTHONPATH="$PYTHONPATH:/tmp/site" PATH="/tmp/site/bin:$PATH" JUPYTER_PATH=/tmp/site/share/jupyter
fi
unset _course_wheels
if ! python3 -c "import ray" 2>/dev/null && ls .gpu-carry/ray/*.tar.xz >/dev/null 2>&1; then
  mkdir -p /tmp/site && tar -xJf .gpu-carry/ray/*.tar.xz -C /tmp/site
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
# nbgrader starts notebooks in a kernel named python3: register the runner's interpreter as it.
python3 -m ipykernel install --prefix /tmp/kernelspec --name python3 >/dev/null 2>&1 \
  && export JUPYTER_PATH="/tmp/kernelspec/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
