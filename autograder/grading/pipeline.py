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
from .verify import apply_to_gradebook, verify

# assignment -> its notebook's name without .ipynb, from each problem's module
ASSIGNMENTS = {a: Path(problems.get(a).NOTEBOOK).stem for a in problems.ASSIGNMENTS}


def submission_timeout_s() -> float:
    """Wall-clock limit for one submission's autograde (nbgrader and its kernel), in seconds."""
    return float(os.environ.get("COURSE_SUBMISSION_TIMEOUT_S", 3600))


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


DONE_MARKER = ".course-graded"  # written into autograded/<student>/<assignment>/ once recorded


def is_graded(course_root: Path, assignment: str, student: str) -> bool:
    return (course_root / "autograded" / student / assignment / DONE_MARKER).exists()


def mark_graded(course_root: Path, assignment: str, student: str, problem: str) -> None:
    """Record that this submission's grade is in the gradebook (written last, after the grade)."""
    (course_root / "autograded" / student / assignment / DONE_MARKER).write_text(problem or "ok")


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


def autograde_submission(course_root: Path, assignment: str, student: str) -> tuple[list[str], str, bool]:
    """Everything that grading one submission costs: `nbgrader autograde` in its own process
    (killed with its notebook kernel at the time limit), then the clean re-run of the awarded
    tests. `course_root` may be the course itself or a scratch copy holding this one submission.

    Returns (notes, problem, autograded): notes from the re-run, why nbgrader did not finish
    (empty when it did), and whether nbgrader left an autograded/<student>/<assignment>/ folder.
    """
    result = run_nbgrader(course_root, "autograde", assignment, f"--student={student}", "--force",
                          timeout_s=submission_timeout_s())
    problem = "" if result.ok else _last_error(result.output)
    if problem and "kernel died" not in problem.lower():
        problem = "nbgrader could not finish: " + problem
    try:
        notes = _verify_student(course_root, assignment, student)
    except Exception as exc:  # verification must not cost the rest of the class its grades
        notes = [f"clean re-run could not be made ({type(exc).__name__}: {str(exc)[:120]}); "
                 "the notebook's grade stands"]
    return notes, problem, (course_root / "autograded" / student / assignment).is_dir()


def autograde_all(course_root: Path, assignment: str, students, progress=True, regrade=False) -> dict:
    """Autograde each student in its own nbgrader process.

    Returns {student: (notes, problem)}. A student already recorded is skipped unless
    `regrade`, so an interrupted run picks up where it stopped and grades nothing twice.
    """
    from tqdm.auto import tqdm

    release_nb = read(course_root / "notebooks" / assignment / f"{ASSIGNMENTS[assignment]}.ipynb")
    outcome = {}
    bar = tqdm(students, desc=f"autograde {assignment}", unit="submission", disable=not progress)
    for student in bar:
        bar.set_postfix_str(student)
        notes, problem, needs_grading = triage(course_root, assignment, student, release_nb, regrade)
        if needs_grading:
            more, problem, autograded = autograde_submission(course_root, assignment, student)
            notes += more
            if autograded:
                mark_graded(course_root, assignment, student, problem)
        outcome[student] = (notes, problem)
    return outcome


def _verify_student(course_root: Path, assignment: str, student: str) -> list[str]:
    """Confirm the points nbgrader gave by re-running the tests cleanly (see verify.py)."""
    from nbgrader.api import Gradebook, MissingEntry

    notebook = ASSIGNMENTS[assignment]
    db = f"sqlite:///{course_root / 'build' / 'gradebook.db'}"
    with Gradebook(db) as gb:
        try:
            if not gb.find_submission_notebook(notebook, assignment, student).score:
                return []  # nothing was awarded, so nothing to confirm
        except MissingEntry:
            return []
    module = problems.get(assignment)
    if _ran_only_released_cells(course_root, assignment, student, module):
        return []  # the notebook run already was the clean run: nothing else could reach the tests
    outcome = verify(course_root / "submitted" / student / assignment / f"{notebook}.ipynb",
                     course_root / "solutions" / assignment / module.NOTEBOOK,
                     course_root / "notebooks" / assignment / module.NOTEBOOK,
                     module.KERNEL_CELLS, module.STUDENT_CELL,
                     policy=getattr(module, "ANSWER_POLICY", "triton"))
    notes = ["answer cell rejected: " + "; ".join(outcome.violations[:2])] if outcome.violations else []
    return notes + apply_to_gradebook(db, assignment, notebook, student, outcome)


def _ran_only_released_cells(course_root: Path, assignment: str, student: str, module) -> bool:
    """True when the submission holds exactly the released code cells, unchanged but for the
    answer cell, and the answer cell passes the answer policy. Then the notebook ran what the
    clean re-run would run (nbgrader restores the locked and test cells from the source), so the
    re-run, a second full execution of every test, would only repeat it."""
    from .verify import answer_cell_violations

    notebook = ASSIGNMENTS[assignment]
    try:
        submitted = read(course_root / "submitted" / student / assignment / f"{notebook}.ipynb")
        released = read(course_root / "notebooks" / assignment / module.NOTEBOOK)
    except Exception:  # unreadable: let the full verification say why
        return False

    def code_cells(nb):
        return {c.get("id"): c.source for c in nb.cells if c.cell_type == "code"}
    mine, theirs = code_cells(submitted), code_cells(released)
    answer = next((c for c in submitted.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id")
                   == module.STUDENT_CELL), None)
    if answer is None or mine.keys() != theirs.keys() or None in mine:
        return False
    if any(source != theirs[cid] for cid, source in mine.items() if cid != answer.get("id")):
        return False
    return not answer_cell_violations(answer.source, getattr(module, "ANSWER_POLICY", "triton"))


def _last_error(output: str) -> str:
    """The most telling line of a failed nbgrader run, for the grade report."""
    lines = output.strip().splitlines()
    if lines and "did not finish within" in lines[-1]:
        return lines[-1]
    if any("DeadKernelError" in l or "Kernel died" in l for l in lines):
        return "the notebook's kernel died while running (e.g. os._exit or a crash): later cells did not run"
    # The exception that stopped nbgrader, not its generic "see the above traceback" lines.
    raised = [l.strip() for l in lines if re.match(r"\s*[\w.]*(Error|Exception|Timeout)\w*: ", l)
              and "[AutogradeApp" not in l]
    if raised:
        return raised[-1][:200]
    errors = [l for l in lines if "ERROR" in l and "see the the above traceback" not in l]
    return (errors[-1] if errors else lines[-1] if lines else "nbgrader failed")[:200]


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


def grade(course_root: Path, assignment: str, progress=True, regrade=False) -> list[SubmissionGrade]:
    """Autograde every submission, write feedback and grades.csv, and return the grades."""
    students = submitted_students(course_root, assignment)
    if not students:
        raise FileNotFoundError(f"no submissions under {course_root / 'submitted'}/<student>/{assignment}/")
    outcome = autograde_all(course_root, assignment, students, progress, regrade)
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
             adversarial=False, only=None, gpu_faults=False, class_size=0, ray=None):
    """Grade the bundled sample submissions end to end (with `adversarial`, also the misbehaving
    ones; `only`: just these samples; `class_size`: see stage_demo). With `ray` (a dict of
    options for ray_grading.grade_class, possibly empty), grade them on Ray instead of one
    after another. Returns (rows, expected {(student, assignment): points})."""
    expected = stage_demo(repo_root, course_root, assignments, adversarial, only, gpu_faults, class_size)
    if ray is not None:
        from .ray_grading import grade_class

        chosen = [a for a in assignments if submitted_students(course_root, a)]
        all_rows = grade_class(course_root, chosen, progress=progress, **ray).rows
    else:
        all_rows = []
        for assignment in assignments:
            if submitted_students(course_root, assignment):  # `only` may leave a problem without any
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
