#!/usr/bin/env bash
# One entry point for newcomers:
#   bash course.sh demo   set up .venv and grade the bundled sample submissions through nbgrader
#   bash course.sh test   set up .venv and run the test suite
# Everything installs into ./.venv; nothing outside this folder is touched.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TRITON_VERSION=${TRITON_VERSION:-3.8.0}   # 3.8's CPU interpreter works with numpy >= 2.4

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  local py="$VENV/bin/python"
  if ! "$py" -c "import torch, triton" 2>/dev/null; then
    echo "==> installing torch $TORCH_VERSION and triton $TRITON_VERSION"
    "$py" -m pip install -q "torch==$TORCH_VERSION" "triton==$TRITON_VERSION"
  fi
  echo "==> installing the course package with its instructor and test extras"
  "$py" -m pip install -q -e ".[dev]"
  # jsonschema's optional IRI format checker (rfc3987-syntax, pulled in by jupyter-events) builds a
  # Lark grammar when jsonschema is imported: 2.5 s in every nbgrader command, judge and notebook
  # process. Nothing in the course validates IRIs, and jsonschema works without it.
  if "$py" -m pip show -q rfc3987-syntax >/dev/null 2>&1; then
    "$py" -m pip uninstall -q -y rfc3987-syntax
  fi
  "$py" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)" >/dev/null
}

case "${1:-}" in
  demo)
    setup
    exec "$VENV/bin/python" -m autograder demo "${@:2}"
    ;;
  test)
    setup
    echo "==> ruff and mypy"
    "$VENV/bin/ruff" check autograder tests scripts
    "$VENV/bin/mypy"
    # Two workers (pytest-xdist) share the machine; each test file runs on one, the longest first
    # (tests/conftest.py; without --no-loadscope-reorder, xdist would hand out the files with the
    # most tests first instead).
    exec "$VENV/bin/python" -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "${@:2}"
    ;;
  *)
    echo "usage: bash course.sh demo|test [extra arguments]" >&2
    exit 2
    ;;
esac
