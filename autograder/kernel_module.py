"""A problem's graded module, assembled from its kernel cells.

Wherever the course runs a problem's code outside the notebook (the reference kernel, the
judge's candidate, sample submissions, tests), the module is built the same way: the kernel
cells in the order the problem's spec lists them, the answer cell in the version at hand (the
solution, the student's cell, or the solution after a sample's edits), then any cells added
after the kernel.
"""
from __future__ import annotations

from .notebook_code import cell_by_id, import_source, strip_markers


def apply_edits(code: str, edits) -> str:
    """`code` after each (old, new) replacement; an edit that no longer applies is an error."""
    for old, new in edits:
        if old not in code:
            raise ValueError(f"sample edit no longer applies to the solution: {old.strip()[:60]!r}")
        code = code.replace(old, new)
    return code


def kernel_source(spec, notebook, answer: str | None = None, edits=(), extra_cells=()) -> str:
    """The source of `spec`'s kernel cells from `notebook`, joined into one module.

    The answer cell (`spec.student_cell`) is `answer` when given, else the notebook's own cell
    after `edits`; solution markers are dropped. `extra_cells` follow the kernel cells.
    """
    parts = []
    for gid in spec.kernel_cells:
        code = strip_markers(cell_by_id(notebook, gid).source)
        if gid == spec.student_cell:
            code = answer if answer is not None else apply_edits(code, edits)
        parts.append(code)
    parts += [cell for cell in extra_cells if cell]
    return "\n\n".join(parts) + "\n"


def import_kernel_module(spec, notebook, answer: str | None = None, edits=(), extra_cells=(), name="variant"):
    """`kernel_source(...)` imported as a module (from a file, as `@triton.jit` needs on a GPU)."""
    return import_source(kernel_source(spec, notebook, answer, edits, extra_cells), f"{spec.assignment}_{name}")
