"""One module per problem: its notebook, its kernel cells, its visible checks and hints.

A problem is registered by existing: every module here named problem<N> is an assignment.
"""
import importlib
import pkgutil
import re
from pathlib import Path


def _discover():
    names = [m.name for m in pkgutil.iter_modules(__path__) if re.fullmatch(r"problem\d+", m.name)]
    return tuple(sorted(names, key=lambda n: int(n[7:])))


ASSIGNMENTS = _discover()
# Every problem's tests of correctness are worth 10 points; the Triton problems add
# PERFORMANCE_POINTS for speed against the reference kernel (autograder.performance).
CORRECTNESS_POINTS = 10


def get(assignment: str):
    """The module describing `assignment` (autograder.problems.<assignment>)."""
    if assignment not in ASSIGNMENTS:
        raise KeyError(f"unknown assignment {assignment!r}; known: {', '.join(ASSIGNMENTS)}")
    return importlib.import_module(f"{__name__}.{assignment}")


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
    module = get(assignment)
    root = Path(__file__).resolve().parents[2]
    if not (root / "solutions" / assignment / module.NOTEBOOK).exists():
        return None
    return getattr(module.reference_module(root), module.KERNEL_FUNCTION)


def performance_points(assignment: str) -> float:
    """The points `assignment` gives for speed (0 for the PyTorch problems)."""
    return getattr(get(assignment), "PERFORMANCE_POINTS", 0)


def total_points(assignment: str) -> float:
    return CORRECTNESS_POINTS + performance_points(assignment)
