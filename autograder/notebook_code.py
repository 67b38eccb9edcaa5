"""Turn selected notebook cells into an importable Python module.

The reference kernel of a problem lives once, in its source notebook under solutions/.
Tests, benchmarks and the sample submissions load it from there. The code is written to
a real file because on a GPU `@triton.jit` reads its function's source from a file.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
import tempfile
from pathlib import Path

import nbformat

SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


def read(path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def cell_by_id(nb, gid: str):
    for cell in nb.cells:
        if grade_id(cell) == gid:
            return cell
    raise KeyError(f"no cell with grade_id {gid!r}")


def strip_markers(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if line.strip() not in SOLUTION_MARKERS)


def import_source(source: str, name_hint: str = "course_module"):
    """Write `source` to a file named by its hash and import it (cached per source)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    name = f"{name_hint}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    folder = Path(tempfile.gettempdir()) / "flash-course-modules"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None  # a .py path always has a source loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
