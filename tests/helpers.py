"""Build kernel variants of problem 3 from the source notebook (the sample submissions' edits)."""
from pathlib import Path

from autograder.grading.samples import apply_edits
from autograder.notebook_code import cell_by_id, import_source, read, strip_markers
from autograder.problems import problem3

SOURCE = Path(__file__).resolve().parent.parent / "solutions" / "problem3" / "problem3.ipynb"


def kernel_variant(edits=(), student_code=None, name="variant"):
    """The problem 3 kernel module with the student's cell edited (or replaced)."""
    nb = read(SOURCE)
    parts = []
    for gid in problem3.KERNEL_CELLS:
        code = strip_markers(cell_by_id(nb, gid).source)
        if gid == problem3.STUDENT_CELL:
            code = student_code if student_code is not None else apply_edits(code, edits)
        parts.append(code)
    return import_source("\n\n".join(parts) + "\n", f"p3_{name}")
