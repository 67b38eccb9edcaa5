"""What the course needs to know about a problem, in one place.

Each problem module defines `SPEC = ProblemSpec(...)`; the registry (`autograder.problems.get`)
checks it when it loads the module, so a mistake in a spec is reported by problem and field
before any grading starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: the performance module is not needed to describe a problem
    from ..performance import TimingPlan


class SpecError(ValueError):
    """A problem's spec is incomplete or contradicts itself."""


@dataclass(frozen=True)
class ProblemSpec:
    assignment: str                # "problem3": the folder under solutions/ and notebooks/
    notebook: str                  # "problem3.ipynb": the notebook file in that folder
    kernel_cells: tuple            # grade ids of the cells that together make the graded module, in order
    student_cell: str              # the one of them the student writes (the answer cell)
    kernel_function: str           # the function of that module the tests call
    answer_policy: str             # what the answer cell may contain: "triton" or "torch" (grading.answer_policy)
    hints: tuple                   # the hint ladder (autograder.hints): nudges first, then the idea
    self_check_cases: tuple        # the visible attention cases a self-learner can run at any time
    performance_points: float = 0  # points for speed against the reference kernel (0: none)
    timing: TimingPlan | None = None  # what to time for those points
    # What kernel_function computes: "forward" fn(q, k, v, ...) -> (o, lse), checked by checks.run_case;
    # "backward" fn(q, k, v, do, causal=...) -> (dq, dk, dv), checked by checks.run_grad_case.
    direction: str = "forward"

    def errors(self) -> list[str]:
        """What is wrong with this spec, one line per field (empty when it is complete)."""
        try:
            from ..grading.answer_policy import POLICIES
        except ImportError:  # the student edition ships without the grading pipeline
            POLICIES = ("triton", "torch")

        found = []
        if not self.notebook.endswith(".ipynb"):
            found.append(f"notebook: {self.notebook!r} is not a .ipynb file name")
        if not self.kernel_cells or len(set(self.kernel_cells)) != len(self.kernel_cells):
            found.append(f"kernel_cells: {self.kernel_cells!r} must name each cell once")
        if self.student_cell not in self.kernel_cells:
            found.append(f"student_cell: {self.student_cell!r} is not among kernel_cells {self.kernel_cells!r}")
        if not self.kernel_function.isidentifier():
            found.append(f"kernel_function: {self.kernel_function!r} is not a function name")
        if self.answer_policy not in POLICIES:
            found.append(f"answer_policy: {self.answer_policy!r} is not one of {', '.join(POLICIES)}")
        if not self.hints or not all(isinstance(h, str) and h.strip() for h in self.hints):
            found.append("hints: the ladder needs at least one step, each a non-empty text")
        if not self.self_check_cases:
            found.append("self_check_cases: a self-learner needs at least one visible case")
        if self.performance_points < 0:
            found.append(f"performance_points: {self.performance_points!r} is negative")
        if self.performance_points and self.timing is None:
            found.append("timing: a problem with performance points needs a timing plan")
        if self.direction not in ("forward", "backward"):
            found.append(f"direction: {self.direction!r} is not 'forward' or 'backward'")
        if self.performance_points and self.answer_policy != "triton":
            found.append("performance_points: only a Triton kernel is timed against the reference")
        return found


def validate(module) -> ProblemSpec:
    """`module.SPEC`, after checking it and what the module must provide with it."""
    name = module.__name__.rsplit(".", 1)[-1]
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, ProblemSpec):
        raise SpecError(f"{name}: SPEC is missing or not a ProblemSpec")
    found = spec.errors()
    if spec.assignment != name:
        found.insert(0, f"assignment: {spec.assignment!r} differs from the module's name {name!r}")
    if not callable(getattr(module, "check", None)):
        found.append("check: the module has no self-check function `check(fn, ...)`")
    if found:
        raise SpecError(f"{name}: " + "; ".join(found))
    return spec
