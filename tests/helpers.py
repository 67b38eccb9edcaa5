"""What the per-problem tests share: kernel modules built from a source notebook with the answer
cell edited (the sample submissions' edits) or replaced, the graded cells as the clean re-run
runs them (and the cases each one checks), and a runner that collects a check's verdicts."""
from pathlib import Path

import pytest

from autograder import verdict
from autograder.checks import CheckFailed
from autograder.grading.samples import SAMPLES
from autograder.grading.verify import graded_test_cells
from autograder.kernel_module import import_kernel_module
from autograder.notebook_code import read
from autograder.problems import ASSIGNMENTS, problem3

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


def codes(result) -> list:
    """The cause codes of one case verdict's findings, in order."""
    return [f.code for f in result.findings]


def checked_cases(source_nb, problem, checks, names) -> dict:
    """{grade_id: [cases]}: what each graded correctness cell of `source_nb` checks, read by running
    it with `problem`'s check functions named in `checks` replaced by recorders, and the functions
    it checks (`names`) absent, so that a test looks at exactly the graded inputs. Every cell
    must check something."""
    seen: dict = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for gid, code in graded_test_cells(source_nb):
            if gid == "test_performance":
                continue
            for check in checks:
                monkeypatch.setattr(problem, check, lambda fn, cases, gid=gid, **kwargs: seen.setdefault(
                    gid, []).extend(cases))
            exec(compile(code, gid, "exec"), dict.fromkeys(names))
            assert seen.get(gid), f"{gid} checks no case"
    return seen


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


def first_named_mistake(assignment: str) -> str:
    """The name of an assignment's first sample with a named mistake (not the untouched one)."""
    return next(s.name for s in SAMPLES[assignment] if s.expected_cause not in ("", "not_implemented"))


# The demo class graded one after another (conftest.demo_class), {assignment: sample names}: the first
# named mistake of a problem of each kind of check (problem 1: PyTorch; problem 3: a forward kernel,
# with its correct and untouched notebooks; problem 6: a forward with block-visit counts; problem 8:
# a backward with gradient checks and visit counts). The feedback path is the same for every
# problem, and each problem's own tests name every one of its samples' mistakes.
DEMO_PROBLEMS = ("problem1", "problem3", "problem6", "problem8")
DEMO_CLASS = {a: {first_named_mistake(a)} | ({"correct", "untouched"} if a == "problem3" else set())
              for a in ASSIGNMENTS if a in DEMO_PROBLEMS}
