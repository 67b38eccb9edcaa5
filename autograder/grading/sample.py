"""One sample submission: how it differs from the reference solution, and what it deserves."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    name: str
    description: str
    expected_points: float | None     # what it deserves out of the problem's total; None: no grade, a reason
    edits: tuple = ()                 # (old, new) replacements in the solution code
    untouched: bool = False           # leave the student's cell as released
    extra_cell: str = ""              # code cell appended after the kernel cell
    extra_cells: tuple = ()           # more code cells after that one, each a cell of its own
    expected_cause: str = ""          # Finding.code the report should name
    # Submission-level faults (what reaches the grader, rather than what the kernel computes):
    locked_edits: tuple = ()          # (grade_id, new source, or None to delete the cell)
    kernelspec: str = ""              # a different kernel name in the notebook's metadata
    filename: str = ""                # hand the notebook in under another name
    raw: str | None = None            # hand in this text instead of a notebook
    missing: bool = False             # hand in an empty folder
    expected_note: str = ""           # text the grade report's notes or problem must contain
    expected_notes: tuple = ()        # more such texts, each of which must be there too
    answer_suffix: str = ""           # code appended to the student's answer cell
    # Performance points it deserves; None: all of them when expected_points is the full
    # correctness score (the kernel is right, as fast as the reference), else none.
    expected_performance: float | None = None


def expected_score(sample: Sample, assignment: str) -> float | None:
    """What the sample deserves out of its problem's total (correctness plus performance)."""
    from ..problems import CORRECTNESS_POINTS, performance_points

    if sample.expected_points is None:
        return None
    if sample.expected_performance is not None:
        return sample.expected_points + sample.expected_performance
    full = sample.expected_points == CORRECTNESS_POINTS
    return sample.expected_points + (performance_points(assignment) if full else 0)
