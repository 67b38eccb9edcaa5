"""The instructor pipeline: release, collect, autograde, feedback, export, report.

Everything goes through nbgrader's command line on a course folder laid out as nbgrader
expects (solutions/ as source, notebooks/ as release, submitted/<student>/<assignment>/).
Each submission is autograded in its own nbgrader process, so one that hangs or crashes
costs only its own grade, and the reason is recorded.
"""
from __future__ import annotations

import csv
import os
import re
import shutil
from pathlib import Path

from .. import problems
from ..notebook_code import read
from .intake import inspect_submission
from .nbgrader_cli import must, run_nbgrader
from .report import SubmissionGrade, format_table, plot_grades, read_grades
from .scratch import (ASSIGNMENTS, DONE_MARKER, course_template, grade_in_scratch, is_graded,  # noqa: F401
                      mark_graded, record_result, submission_timeout_s)


def prepare_course(repo_root: Path, course_root: Path) -> None:
    """A fresh course folder holding the course's nbgrader config and source notebooks."""
    course_root.mkdir(parents=True, exist_ok=True)
    (course_root / "build").mkdir(exist_ok=True)
    shutil.copy(repo_root / "nbgrader_config.py", course_root / "nbgrader_config.py")
    if (course_root / "solutions").exists():
        shutil.rmtree(course_root / "solutions")
    shutil.copytree(repo_root / "solutions", course_root / "solutions",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))


def release(course_root: Path, assignment: str) -> Path:
    """nbgrader generate_assignment: the student notebook, solutions and hidden tests removed."""
    must(run_nbgrader(course_root, "generate_assignment", assignment, "--force"))
    return course_root / "notebooks" / assignment / f"{ASSIGNMENTS[assignment]}.ipynb"


def submitted_students(course_root: Path, assignment: str) -> list[str]:
    base = course_root / "submitted"
    return sorted(p.name for p in base.iterdir() if (p / assignment).is_dir()) if base.exists() else []


def triage(course_root: Path, assignment: str, student: str, release_nb, regrade=False) -> tuple[list[str], str, bool]:
    """Intake of one submission before any grading: (notes, problem, needs_grading).

    Already-graded submissions are kept unless `regrade`; one that cannot be graded gets its
    reason as `problem`. Both the sequential and the class-wide (Ray) path start here, so they
    write the same notes.
    """
    notes, gradable = inspect_submission(course_root / "submitted" / student / assignment,
                                         ASSIGNMENTS[assignment], release_nb)
    if not regrade and is_graded(course_root, assignment, student):
        return notes + ["already graded; kept (use --regrade to grade again)"], "", False
    if not gradable:
        return notes, notes[0], False
    return notes, "", True


def autograde_all(course_root: Path, assignment: str, students, progress=True, regrade=False,
                  sandboxed=True) -> dict:
    """Autograde each student in a scratch course of its own (scratch.grade_in_scratch), then
    record the result in the course: only this process writes the gradebook.

    Returns {student: (notes, problem)}. A student already recorded is skipped unless
    `regrade`, so an interrupted run picks up where it stopped and grades nothing twice.
    """
    from tqdm.auto import tqdm

    from .scratch import _read_tree

    release_nb = read(course_root / "notebooks" / assignment / f"{ASSIGNMENTS[assignment]}.ipynb")
    common, template = course_template(course_root, [assignment])
    use_judge_cache(course_root)
    outcome = {}
    bar = tqdm(students, desc=f"autograde {assignment}", unit="submission", disable=not progress)
    for student in bar:
        bar.set_postfix_str(student)
        notes, problem, needs_grading = triage(course_root, assignment, student, release_nb, regrade)
        if needs_grading:
            submission = _read_tree(course_root / "submitted" / student / assignment)
            result = grade_in_scratch(common, template[assignment], submission, assignment, student,
                                      sandboxed=sandboxed)
            record_result(course_root, result)
            notes += result.notes
            problem = result.problem
        outcome[student] = (notes, problem)
    return outcome


def finish(course_root: Path, assignment: str, students, outcome: dict, feedback=True) -> list[SubmissionGrade]:
    """Feedback (unless `feedback` is false: nothing new to say) and nbgrader's CSV export from
    the gradebook, then the grade rows with the notes and problems of `outcome`
    ({student: (notes, problem)})."""
    if feedback:
        must(run_nbgrader(course_root, "generate_feedback", assignment, "--force"))
    must(run_nbgrader(course_root, "export", f"--to={course_root / 'grades.csv'}"))
    rows = read_grades(course_root, assignment, ASSIGNMENTS[assignment], students)
    for row in rows:
        notes, problem = outcome.get(row.student, ([], ""))
        row.notes = notes
        row.problem = problem or row.problem
    return rows


def use_judge_cache(course_root: Path) -> None:
    """Keep the judge's verdicts in the course (verify.judge_cache_path), unless told elsewhere."""
    os.environ.setdefault("COURSE_JUDGE_CACHE", str(Path(course_root).resolve() / "build" / "judge-cache"))


def sandbox_choice(mode: str) -> bool:
    """Whether to grade in the sandbox. mode "required": yes, or stop with the reason when it cannot
    start (fail closed); "off": no (--no-sandbox, every row says so); "auto": where it can (the
    demo of the course's own sample submissions), saying so plainly where it cannot."""
    from . import sandbox

    if mode == "off":
        return False
    status = sandbox.probe()
    if status.available:
        return True
    if mode == "required":
        raise sandbox.SandboxUnavailable(
            f"grading stopped: the sandbox for student code cannot start. {status.reason} "
            "(To grade anyway, unsafely, pass --no-sandbox: every grade is then marked as unsandboxed.)")
    print(f"NOTE: running WITHOUT the sandbox: {status.reason}")
    return False


def grade(course_root: Path, assignment: str, progress=True, regrade=False, sandboxed=True) -> list[SubmissionGrade]:
    """Autograde every submission, write feedback and grades.csv, and return the grades."""
    students = submitted_students(course_root, assignment)
    if not students:
        raise FileNotFoundError(f"no submissions under {course_root / 'submitted'}/<student>/{assignment}/")
    outcome = autograde_all(course_root, assignment, students, progress, regrade, sandboxed)
    return finish(course_root, assignment, students, outcome)


def export_rows(rows, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["submission", "assignment", "score", "max_score", "failed_tests", "likely_causes",
                    "problem", "notes"])
        for r in rows:
            w.writerow([r.student, r.assignment, "" if r.score is None else r.score, r.max_score,
                        ";".join(r.failed_tests), ";".join(r.causes), r.problem, " | ".join(r.notes)])


def stage_demo(repo_root: Path, course_root: Path, assignments=problems.ASSIGNMENTS, adversarial=False,
               only=None, gpu_faults=False, class_size=0) -> dict:
    """A fresh course folder with every chosen assignment released and its sample submissions
    handed in. Returns the points each submission deserves, {(student, assignment): points}.

    With `class_size`, exactly that many submissions: samples taken in turn from each assignment
    (every problem's first sample, then every problem's second, ...), handed in again under
    other student names (`<sample>-2`, `<sample>-3`, ...) when there are too few.
    """
    from .samples import ADVERSARIAL, GPU_FAULTS, SAMPLES, expected_score, write_samples

    if course_root.exists():
        shutil.rmtree(course_root)
    prepare_course(repo_root, course_root)
    expected, by_assignment = {}, {}
    for assignment in assignments:
        module = problems.get(assignment)
        release_path = release(course_root, assignment)
        chosen = (SAMPLES[assignment] + (ADVERSARIAL[assignment] if adversarial else ())
                  + (GPU_FAULTS[assignment] if gpu_faults else ()))
        chosen = tuple(s for s in chosen if only is None or s.name in only)
        samples = write_samples(assignment, course_root / "solutions" / assignment / module.NOTEBOOK,
                                release_path, course_root / "submitted", module.STUDENT_CELL,
                                module.KERNEL_CELLS[-1], chosen)
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
             adversarial=False, only=None, gpu_faults=False, class_size=0, ray=None, sandbox_mode="auto"):
    """Grade the bundled sample submissions end to end (with `adversarial`, also the misbehaving
    ones; `only`: just these samples; `class_size`: see stage_demo). With `ray` (a dict of
    options for ray_grading.grade_class, possibly empty), grade them on Ray instead of one
    after another. Returns (rows, expected {(student, assignment): points})."""
    sandboxed = sandbox_choice("required" if adversarial else sandbox_mode)
    expected = stage_demo(repo_root, course_root, assignments, adversarial, only, gpu_faults, class_size)
    if ray is not None:
        from .ray_grading import grade_class

        chosen = [a for a in assignments if submitted_students(course_root, a)]
        all_rows = grade_class(course_root, chosen, progress=progress, sandboxed=sandboxed, **ray).rows
    else:
        all_rows = []
        for assignment in assignments:
            if submitted_students(course_root, assignment):  # `only` may leave a problem without any
                all_rows += grade(course_root, assignment, progress, sandboxed=sandboxed)
    export_rows(all_rows, course_root / "grade_report.csv")
    plot_grades(all_rows, course_root / "grades.png")
    return all_rows, expected


def summary(rows, expected=None) -> str:
    text = format_table(rows)
    if expected:
        wrong = [f"{r.student}: got {r.score}, expected {expected[(r.student, r.assignment)]}"
                 for r in rows if (r.student, r.assignment) in expected and r.score != expected[(r.student, r.assignment)]]
        text += "\n\n" + ("Every sample got the score it deserves." if not wrong
                          else "UNEXPECTED GRADES:\n  " + "\n  ".join(wrong))
    return text
