"""The course's bundled sample submissions graded as a class, end to end through nbgrader.

A fresh course folder gets every chosen problem released and its samples handed in (correct,
untouched, typical mistakes; with `adversarial`, also submissions that misbehave); then the class
is graded like any other (autograde.grade, with the grader the caller chose), and each grade is
compared with the points its sample deserves.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .. import problems
from .autograde import Grader, GradingRun, grade, sandbox_choice
from .course import init_course, release_path, submitted_students
from .export import write_report
from .samples import ADVERSARIAL, GPU_FAULTS, SAMPLES, expected_score, write_samples


def stage_demo(repo_root: Path, course_root: Path, assignments=problems.ASSIGNMENTS, adversarial=False,
               only=None, gpu_faults=False, class_size=0) -> dict:
    """A fresh course folder with every chosen assignment released and its sample submissions
    handed in. Returns the points each submission deserves, {(student, assignment): points}.

    With `class_size`, exactly that many submissions: samples taken in turn from each assignment
    (every problem's first sample, then every problem's second, ...), handed in again under
    other student names (`<sample>-2`, `<sample>-3`, ...) when there are too few.
    """
    if course_root.exists():
        shutil.rmtree(course_root)
    init_course(repo_root, course_root, assignments)
    expected, by_assignment = {}, {}
    for assignment in assignments:
        spec = problems.get_spec(assignment)
        chosen = (SAMPLES[assignment] + (ADVERSARIAL[assignment] if adversarial else ())
                  + (GPU_FAULTS[assignment] if gpu_faults else ()))
        wanted = only.get(assignment, set()) if isinstance(only, dict) else only
        chosen = tuple(s for s in chosen if wanted is None or s.name in wanted)
        samples = write_samples(assignment, course_root / "solutions" / assignment / spec.notebook,
                                release_path(course_root, assignment), course_root / "submitted", spec.student_cell,
                                spec.kernel_cells[-1], chosen)
        expected.update({(s.name, assignment): expected_score(s, assignment) for s in samples})
        by_assignment[assignment] = [(s.name, assignment) for s in samples]
    if not class_size or not expected:
        return expected
    in_turn = [queue[i] for i in range(max(map(len, by_assignment.values())))
               for queue in by_assignment.values() if i < len(queue)]
    for student, assignment in in_turn[class_size:]:
        shutil.rmtree(course_root / "submitted" / student / assignment)
    kept = {key: expected[key] for key in in_turn[:class_size]}
    originals = list(kept)
    for n in range(len(originals), class_size):
        student, assignment = originals[n % len(originals)]
        twin = f"{student}-{n // len(originals) + 1}"
        shutil.copytree(course_root / "submitted" / student / assignment,
                        course_root / "submitted" / twin / assignment)
        kept[(twin, assignment)] = kept[(student, assignment)]
    return kept


def run_demo(repo_root: Path, course_root: Path, assignments=problems.ASSIGNMENTS, progress=True,
             adversarial=False, only=None, gpu_faults=False, class_size=0, grader: Grader | None = None,
             sandbox_mode="auto") -> tuple[GradingRun, dict]:
    """Grade the bundled sample submissions end to end (with `adversarial`, also the misbehaving
    ones, always in the sandbox; `only`: just these samples, a set of names or {assignment: names};
    `class_size`: see stage_demo) with
    `grader` (default: one after another), and write the grade report and its plot.
    Returns (the run, expected {(student, assignment): points})."""
    sandboxed = sandbox_choice("required" if adversarial else sandbox_mode)
    expected = stage_demo(repo_root, course_root, assignments, adversarial, only, gpu_faults, class_size)
    chosen = [a for a in assignments if submitted_students(course_root, a)]  # `only` may leave one without any
    run = grade(course_root, chosen, grader=grader, sandboxed=sandboxed, progress=progress) if chosen \
        else GradingRun([])
    write_report(run.rows, course_root)
    return run, expected
