"""The instructor pipeline: release, collect, autograde, feedback, export, report.

Everything goes through nbgrader's command line on a course folder laid out as nbgrader
expects (solutions/ as source, notebooks/ as release, submitted/<student>/<assignment>/).
Each submission is autograded in its own nbgrader process, so one that hangs or crashes
costs only its own grade, and the reason is recorded.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

from .nbgrader_cli import must, run_nbgrader
from .report import SubmissionGrade, format_table, plot_grades, read_grades

ASSIGNMENTS = {"problem3": "problem3"}  # assignment -> notebook name (without .ipynb)
SUBMISSION_TIMEOUT_S = 3600


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


def autograde_all(course_root: Path, assignment: str, students, progress=True) -> dict:
    """Autograde each student in its own nbgrader process. Returns {student: problem or ''}."""
    from tqdm.auto import tqdm

    problems = {}
    bar = tqdm(students, desc=f"autograde {assignment}", unit="submission", disable=not progress)
    for student in bar:
        bar.set_postfix_str(student)
        result = run_nbgrader(course_root, "autograde", assignment, f"--student={student}", "--force",
                              timeout_s=SUBMISSION_TIMEOUT_S)
        problems[student] = "" if result.ok else _last_error(result.output)
    return problems


def _last_error(output: str) -> str:
    lines = [l for l in output.strip().splitlines() if "ERROR" in l or "Error" in l]
    return (lines[-1] if lines else output.strip().splitlines()[-1] if output.strip() else "nbgrader failed")[:200]


def grade(course_root: Path, assignment: str, progress=True) -> list[SubmissionGrade]:
    """Autograde every submission, write feedback and grades.csv, and return the grades."""
    students = submitted_students(course_root, assignment)
    if not students:
        raise FileNotFoundError(f"no submissions under {course_root / 'submitted'}/<student>/{assignment}/")
    problems = autograde_all(course_root, assignment, students, progress)
    must(run_nbgrader(course_root, "generate_feedback", assignment, "--force"))
    must(run_nbgrader(course_root, "export", f"--to={course_root / 'grades.csv'}"))
    rows = read_grades(course_root, assignment, ASSIGNMENTS[assignment], students)
    for row in rows:
        if problems.get(row.student) and row.score is None:
            row.problem = problems[row.student]
    return rows


def export_rows(rows, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["submission", "assignment", "score", "max_score", "failed_tests", "likely_causes", "problem"])
        for r in rows:
            w.writerow([r.student, r.assignment, "" if r.score is None else r.score, r.max_score,
                        ";".join(r.failed_tests), ";".join(r.causes), r.problem])


def run_demo(repo_root: Path, course_root: Path, assignments=("problem3",), progress=True):
    """Grade the bundled sample submissions end to end. Returns (rows, expected {(student, assignment): points})."""
    from ..notebook_code import read  # noqa: F401  (keeps nbformat import errors early and clear)
    from ..problems import problem3
    from .samples import SAMPLES, write_samples

    problem_modules = {"problem3": problem3}
    if course_root.exists():
        shutil.rmtree(course_root)
    prepare_course(repo_root, course_root)
    all_rows, expected = [], {}
    for assignment in assignments:
        module = problem_modules[assignment]
        release_path = release(course_root, assignment)
        samples = write_samples(assignment, course_root / "solutions" / assignment / module.NOTEBOOK,
                                release_path, course_root / "submitted", module.STUDENT_CELL, "kernel")
        expected.update({(s.name, assignment): s.expected_points for s in samples})
        all_rows += grade(course_root, assignment, progress)
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
