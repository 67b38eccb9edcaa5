"""One module per problem: its notebook, its kernel cells, its visible checks and hints.

A problem is registered by existing: every module here named problem<N>, or problem<N><letter>
for a step between two numbered problems (problem2b comes after problem2 and before problem3), is
an assignment. Each describes itself in `SPEC` (spec.ProblemSpec), which is checked when the
module is loaded here.
"""
import importlib
import pkgutil
import re
from pathlib import Path

from .spec import ProblemSpec, SpecError, validate

_NAME = re.compile(r"problem(\d+)([a-z]?)")


def course_order(name: str) -> tuple[int, str]:
    """Where an assignment comes in the course: by number, then letter (problem2 < problem2b < problem3)."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not an assignment name (problem<N> or problem<N><letter>)")
    return int(match.group(1)), match.group(2)


def _discover():
    names = [m.name for m in pkgutil.iter_modules(__path__) if _NAME.fullmatch(m.name)]
    return tuple(sorted(names, key=course_order))


ASSIGNMENTS = _discover()
# Every problem's tests of correctness are worth 10 points; the Triton problems add their spec's
# performance_points for speed against the reference kernel (autograder.performance).
CORRECTNESS_POINTS = 10
_REPO_ROOT = Path(__file__).resolve().parents[2]
_VALIDATED: set = set()


def get(assignment: str):
    """The module describing `assignment` (autograder.problems.<assignment>), its spec checked."""
    if assignment not in ASSIGNMENTS:
        raise KeyError(f"unknown assignment {assignment!r}; known: {', '.join(ASSIGNMENTS)}")
    module = importlib.import_module(f"{__name__}.{assignment}")
    if assignment not in _VALIDATED:
        validate(module)
        _VALIDATED.add(assignment)
    return module


def get_spec(assignment_or_spec) -> ProblemSpec:
    """The spec of an assignment (a spec passes through)."""
    if isinstance(assignment_or_spec, ProblemSpec):
        return assignment_or_spec
    return get(assignment_or_spec).SPEC


def source_notebook_path(assignment_or_spec, repo_root=_REPO_ROOT) -> Path:
    problem = get_spec(assignment_or_spec)
    return Path(repo_root) / "solutions" / problem.assignment / problem.notebook


def reference_module(assignment_or_spec, repo_root=_REPO_ROOT):
    """The reference solution's kernel cells, imported from the source notebook (instructor side)."""
    from ..kernel_module import import_kernel_module
    from ..notebook_code import read

    problem = get_spec(assignment_or_spec)
    return import_kernel_module(problem, read(source_notebook_path(problem, repo_root)), name="reference")


_REFERENCE_OVERRIDES: dict = {}


def set_reference_override(assignment: str, fn) -> None:
    """Use `fn` as the reference function of `assignment` in this process (the judge: the
    reference kernel running in a candidate process of its own, timed as the student's is)."""
    _REFERENCE_OVERRIDES[assignment] = fn


def reference_function(assignment: str):
    """The reference solution's graded function, or None where the course's sources are not at
    hand (a student's Colab install ships without solutions/): benchmarks put the learner's kernel
    next to it when they can, and each problem hands this function to performance.points_function,
    which asks it for the kernel to time against."""
    if assignment in _REFERENCE_OVERRIDES:
        return _REFERENCE_OVERRIDES[assignment]
    problem = get_spec(assignment)
    if not source_notebook_path(problem).exists():
        return None
    return getattr(reference_module(problem), problem.kernel_function)


def performance_points(assignment: str) -> float:
    """The points `assignment` gives for speed (0 for the PyTorch problems)."""
    return get_spec(assignment).performance_points


def total_points(assignment: str) -> float:
    return CORRECTNESS_POINTS + performance_points(assignment)


__all__ = ["ASSIGNMENTS", "CORRECTNESS_POINTS", "course_order", "ProblemSpec", "SpecError", "get", "get_spec",
           "reference_module", "reference_function", "performance_points", "total_points", "set_reference_override"]
