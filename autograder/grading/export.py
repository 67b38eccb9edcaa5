"""What grading leaves for the instructor: feedback, nbgrader's CSV export, the grade report
(a line per submission, with its failed tests and likely causes), a plot, and a summary table.

Everything here reads the course's gradebook and autograded folder, which only the grading
driver writes.
"""
from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import threads
from .nbgrader_cli import must, run_nbgrader
from .report import SubmissionGrade, format_table, plot_grades, read_grades
from .scratch import ASSIGNMENTS

GRADES_CSV = "grades.csv"               # nbgrader's export
GRADE_REPORT_CSV = "grade_report.csv"   # the course's report, a line per submission
GRADES_PLOT = "grades.png"


def write_feedback(course_root: Path, assignment: str) -> None:
    """nbgrader generate_feedback: an HTML page per graded submission of `assignment`."""
    must(run_nbgrader(course_root, "generate_feedback", assignment, "--force"))


def write_feedback_all(course_root: Path, assignments) -> None:
    """`write_feedback` for each of `assignments`, as many at once as there are cores.

    Each is its own nbgrader process that only reads the gradebook (SQLite serves concurrent
    readers) and writes only feedback/<student>/<assignment>/, so they cannot disturb one
    another; one after another, their start-ups alone were most of the driver's serial tail
    after a class was graded on several GPUs.
    """
    assignments = list(assignments)
    if not assignments:
        return
    with ThreadPoolExecutor(max_workers=min(len(assignments), threads.cores())) as pool:
        results = list(pool.map(lambda a: run_nbgrader(course_root, "generate_feedback", a, "--force"), assignments))
    for result in results:
        must(result)


def has_feedback(course_root: Path, assignment: str, student: str) -> bool:
    return (course_root / "feedback" / student / assignment / f"{ASSIGNMENTS[assignment]}.html").exists()


def export_gradebook(course_root: Path) -> Path:
    """nbgrader export: the gradebook as grades.csv in the course folder."""
    path = course_root / GRADES_CSV
    must(run_nbgrader(course_root, "export", f"--to={path}"))
    return path


def grade_rows(course_root: Path, assignment: str, students, outcome: dict) -> list[SubmissionGrade]:
    """The grade of each of `students` from the gradebook, with the notes and problem that
    grading found (`outcome`: {student: (notes, problem)})."""
    rows = read_grades(course_root, assignment, ASSIGNMENTS[assignment], students)
    for row in rows:
        notes, problem = outcome.get(row.student, ([], ""))
        row.notes = notes
        row.problem = problem or row.problem
    return rows


def write_rows(rows, path: Path) -> None:
    """The grade report as CSV: a line per submission."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["submission", "assignment", "score", "max_score", "failed_tests", "likely_causes",
                    "problem", "notes"])
        for r in rows:
            w.writerow([r.student, r.assignment, "" if r.score is None else r.score, r.max_score,
                        ";".join(r.failed_tests), ";".join(r.causes), r.problem, " | ".join(r.notes)])


def write_report(rows, course_root: Path) -> None:
    """grade_report.csv and grades.png in the course folder."""
    write_rows(rows, course_root / GRADE_REPORT_CSV)
    plot_grades(rows, course_root / GRADES_PLOT)


def summary(rows, expected=None) -> str:
    """The grade table; with `expected` ({(student, assignment): points}), also every grade that
    differs from it."""
    text = format_table(rows)
    if expected:
        wrong = [f"{r.student}: got {r.score}, expected {expected[(r.student, r.assignment)]}"
                 for r in rows
                 if (r.student, r.assignment) in expected and r.score != expected[(r.student, r.assignment)]]
        text += "\n\n" + ("Every sample got the score it deserves." if not wrong
                          else "UNEXPECTED GRADES:\n  " + "\n  ".join(wrong))
    return text
