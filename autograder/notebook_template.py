"""The cells every notebook of the course shares, generated from `course_config`.

Two cells are the same in every problem and must never drift apart:

* `colab_badge` (markdown, first cell): the "Open in Colab" badge for this problem's student
  notebook in the student edition (`course_config.STUDENT_REPOSITORY`), and a link to the
  edition's README (where to run it, and what each place can do);
* `setup` (code, before any kernel): installs the course package when it is missing (Colab),
  then decides GPU or Triton interpreter before any `@triton.jit` runs.

`apply(nb, assignment)` brings a source notebook in line with them; `python -m autograder release`
calls it on every source notebook it releases, so the student notebooks nbgrader generates carry
the current address. `differences(nb, assignment)` says what is out of line (the tests use it).
"""
from __future__ import annotations

from pathlib import Path

import nbformat

from . import course_config

BADGE_ID = "colab_badge"
SETUP_ID = "setup"
# Chapters with nothing to hand in: written in notebooks/<chapter>/<chapter>.ipynb directly (there is
# no solution to strip, so nbgrader does not release them), with the same two cells.
CHAPTERS = ("capstone",)


def _nbgrader(grade_id: str) -> dict:
    # The shape of every locked, ungraded cell in the course (nbgrader's schema 3).
    return {"grade": False, "grade_id": grade_id, "locked": True, "schema_version": 3,
            "solution": False, "task": False}


def badge_source(assignment: str, notebook: str | None = None) -> str:
    guide = f"{course_config.STUDENT_REPOSITORY}/blob/{course_config.STUDENT_BRANCH}/README.md#start"
    return (f"[![Open In Colab]({course_config.COLAB_BADGE_IMAGE})]"
            f"({course_config.colab_url(assignment, notebook)})\n\n"
            f"Runs in Colab (GPU or CPU), on a laptop without a GPU, or on a GPU machine: "
            f"[how to start, and what each can do]({guide}).")


# The modules the course imports at run time, by the name pip knows them under. Colab ships
# them all; the setup cell installs only those that are missing, next to the course package.
RUNTIME_MODULES = ("torch", "triton", "numpy", "matplotlib", "nbformat", "tqdm")


def setup_source() -> str:
    modules = ", ".join(f'"{m}"' for m in RUNTIME_MODULES)
    return f'''\
# Setup: run this first. It must run before any Triton kernel is defined, because Triton
# decides at definition time whether a kernel is compiled for the GPU or interpreted.
import importlib
import importlib.util
import subprocess
import sys

# Where pip finds the course: the student edition of the course.
COURSE_PIP_SPEC = "{course_config.pip_spec()}"

if importlib.util.find_spec("autograder") is None:  # Colab, or a fresh environment
    # The course package alone (--no-deps): Colab already has torch, triton and matplotlib, and
    # pip must not replace its CUDA build of torch. Then only what this machine lacks, if anything.
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--no-deps", COURSE_PIP_SPEC], check=True)
    needed = ({modules})
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        subprocess.run([*pip, *missing], check=True)
    importlib.invalidate_caches()

from autograder.device import configure

runtime = configure()  # the GPU if Triton supports it, else TRITON_INTERPRET=1 with float16 and small shapes'''


def _badge_cell(assignment: str, notebook: str | None):
    cell = nbformat.v4.new_markdown_cell(badge_source(assignment, notebook))
    cell.id = "colab-badge"
    cell.metadata["nbgrader"] = _nbgrader(BADGE_ID)
    return cell


def _find(nb, grade_id: str):
    return next((c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id),
                None)


def differences(nb, assignment: str, notebook: str | None = None) -> list[str]:
    """What in `nb` differs from the template (empty when it is in line)."""
    found = []
    badge = _find(nb, BADGE_ID)
    if badge is None:
        found.append(f"no `{BADGE_ID}` cell")
    else:
        if nb.cells[0] is not badge:
            found.append(f"the `{BADGE_ID}` cell is not the first cell")
        if badge.cell_type != "markdown" or badge.source != badge_source(assignment, notebook):
            found.append(f"the `{BADGE_ID}` cell is not the template's")
        if badge.metadata.get("nbgrader") != _nbgrader(BADGE_ID):
            found.append(f"the `{BADGE_ID}` cell's nbgrader metadata is not the template's")
    setup = _find(nb, SETUP_ID)
    if setup is None:
        found.append(f"no `{SETUP_ID}` cell")
    else:
        if setup.cell_type != "code" or setup.source != setup_source():
            found.append(f"the `{SETUP_ID}` cell's code is not the template's")
        if setup.metadata.get("nbgrader") != _nbgrader(SETUP_ID):
            found.append(f"the `{SETUP_ID}` cell's nbgrader metadata is not the template's")
    return found


def apply(nb, assignment: str, notebook: str | None = None) -> bool:
    """Put the template's badge cell first and the template's code in the `setup` cell.

    Returns True when `nb` changed. The setup cell stays where the author put it (it must come
    before any kernel, which the notebook tests check); a notebook without one is an error,
    because where it belongs depends on the chapter.
    """
    if not differences(nb, assignment, notebook):
        return False
    setup = _find(nb, SETUP_ID)
    if setup is None or setup.cell_type != "code":
        raise ValueError(f"{assignment}: the source notebook needs a code cell with grade_id {SETUP_ID!r}")
    setup.source = setup_source()
    setup.metadata["nbgrader"] = _nbgrader(SETUP_ID)
    badge = _find(nb, BADGE_ID)
    if badge is not None:
        nb.cells.remove(badge)
    fresh = _badge_cell(assignment, notebook)
    if badge is not None and badge.get("id"):
        fresh.id = badge.id  # keep a cell id stable once it exists
    nb.cells.insert(0, fresh)
    return True


def apply_to_file(path: Path, assignment: str) -> bool:
    """Apply the template to the notebook at `path` and write it back if anything changed."""
    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    changed = apply(nb, assignment, path.name)
    if changed:
        nbformat.validate(nb)
        nbformat.write(nb, str(path))
    return changed
