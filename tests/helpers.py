"""What the per-problem tests share: kernel modules built from a source notebook with the answer
cell edited (the sample submissions' edits) or replaced, the graded cells as the clean re-run
runs them, and a runner that collects a check's verdicts."""
from pathlib import Path

from autograder import verdict
from autograder.checks import CheckFailed
from autograder.grading.verify import graded_test_cells
from autograder.kernel_module import import_kernel_module
from autograder.notebook_code import read
from autograder.problems import problem3

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE = REPO_ROOT / "solutions" / "problem3" / "problem3.ipynb"


def kernel_module(problem, source_nb, edits=(), student_code=None, extra="", name="variant"):
    """The problem's kernel cells as one module, the answer cell edited (or replaced), plus an
    optional extra cell at the end."""
    return import_kernel_module(problem.SPEC, source_nb, answer=student_code, edits=edits, extra_cells=(extra,),
                                name=name)


def kernel_variant(edits=(), student_code=None, name="variant"):
    """The problem 3 kernel module with the student's cell edited (or replaced)."""
    return kernel_module(problem3, read(SOURCE), edits, student_code, name=name)


def graded_cells(source, performance=True):
    """(grade_id, code) of every graded test cell of a source notebook, hidden ones included."""
    cells = graded_test_cells(read(REPO_ROOT / source))
    return [(gid, code) for gid, code in cells if performance or gid != "test_performance"]


def run_graded_cell(module, gid, code):
    """Run one graded cell against a kernel module, as the clean re-run does (raises CheckFailed)."""
    namespace = {"__name__": "__verify__"}
    namespace.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    exec(compile(code, f"<{gid}>", "exec"), namespace)


def likely_causes(verdicts):
    """The cause codes that case verdicts name."""
    return {f.code for v in verdicts for f in v.findings}


def run_printing_check(check, capsys):
    """Run a check; return (passed, the case verdicts it reported, the text it printed)."""
    with verdict.collect() as verdicts:
        try:
            check()
            passed = True
        except CheckFailed:
            passed = False
    return passed, verdicts, capsys.readouterr().out
