"""Grading one submission in a scratch course of its own, and recording the result.

Every path grades a submission the same way (the one-machine path one after another, the Ray
path as tasks anywhere in a cluster): a scratch course folder holding the course's config, a
copy of the gradebook without submissions, the assignment's source and release notebooks and
this one submission. There nbgrader autogrades the notebook (its kernel in the sandbox) and the
judge decides the points (verify.py). Only the driver writes the real course: it records the
scratch gradebook's rows, the autograded folder and the done marker (record_result), one result
at a time, so no process that ran student code ever opens the course's gradebook.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import problems, threads
from ..notebook_code import read
from .feedback_verdicts import write_verdicts
from .nbgrader_cli import StepResult, run_nbgrader
from .verify import apply_to_gradebook, verify

# assignment -> its notebook's name without .ipynb, from each problem's module
ASSIGNMENTS = {a: Path(problems.get_spec(a).notebook).stem for a in problems.ASSIGNMENTS}
SCRATCH_DIR = "course-grading"      # under each node's temporary folder

GRADE_FIELDS = ("auto_score", "manual_score", "extra_credit", "needs_manual_grade")
COMMENT_FIELDS = ("auto_comment", "manual_comment")


def submission_timeout_s() -> float:
    """Wall-clock limit for one submission's autograde (nbgrader and its kernel), in seconds."""
    return float(os.environ.get("COURSE_SUBMISSION_TIMEOUT_S", 3600))


VERDICTS_FILE = "judge-verdicts.json"  # beside the autograded notebook: the judge's verdict per test
DONE_MARKER = ".course-graded"  # written into autograded/<student>/<assignment>/ once recorded


def is_graded(course_root: Path, assignment: str, student: str) -> bool:
    return (course_root / "autograded" / student / assignment / DONE_MARKER).exists()


def mark_graded(course_root: Path, assignment: str, student: str, problem: str) -> None:
    """Record that this submission's grade is in the gradebook (written last, after the grade)."""
    folder = course_root / "autograded" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)  # a notebook whose kernel died leaves none
    (folder / DONE_MARKER).write_text(problem or "ok")


def autograde_submission(course_root: Path, assignment: str, student: str,
                         sandboxed: bool = True) -> tuple[list[str], str, bool]:
    """Everything that grading one submission costs: the judge's verdict (verify.py) and, while
    the judge works, `nbgrader autograde` in its own process (killed with its notebook kernel at
    the time limit; with `sandboxed`, the kernel runs in the sandbox), which gives the feedback
    and the gradebook rows the judge's points go into. `course_root` is a scratch course holding
    this one submission (grade_in_scratch).

    Returns (notes, problem, graded): notes from the judge, why nbgrader did not finish (empty
    when it did), and whether the submission has a grade to record.
    """
    from nbgrader.api import Gradebook, MissingEntry

    from .sandboxed_kernel import install_kernelspec

    env: dict[str, str] = {}
    extra: list[str] = []
    if sandboxed:
        env, extra = install_kernelspec(course_root)  # the kernel reaches nbgrader by Unix sockets

    def notebook_run():
        return run_nbgrader(course_root, "autograde", assignment, f"--student={student}", "--force", *extra,
                            timeout_s=submission_timeout_s(), env=env)

    spec = problems.get_spec(assignment)
    notebook = ASSIGNMENTS[assignment]
    try:
        outcome = verify(course_root / "submitted" / student / assignment / f"{notebook}.ipynb",
                         course_root / "solutions" / assignment / spec.notebook,
                         course_root / "notebooks" / assignment / spec.notebook,
                         spec.kernel_cells, spec.student_cell,
                         policy=spec.answer_policy, assignment=assignment,
                         sandboxed=sandboxed, meanwhile=notebook_run)
    except Exception as exc:  # the judge must not cost the rest of the class its grades
        return [], f"the judge failed ({type(exc).__name__}: {str(exc)[:160]})", False
    result = outcome.meanwhile
    assert isinstance(result, StepResult)  # what notebook_run returned
    problem = "" if result.ok else _last_error(result.output)
    if problem and "kernel died" not in problem.lower():
        problem = "nbgrader could not finish: " + problem
    if outcome.grader_error:
        # No grade without the judge's verdict: the submission stays ungraded, so the next run retries it.
        return [], "the judge could not run: " + outcome.grader_error[:300], False
    db = f"sqlite:///{course_root / 'build' / 'gradebook.db'}"
    with Gradebook(db) as gb:
        try:
            gb.find_submission_notebook(notebook, assignment, student)
        except MissingEntry:
            return [], problem or "nbgrader recorded no grades for this notebook", False
    notes = ["answer cell rejected: " + "; ".join(outcome.violations[:2])] if outcome.violations else []
    # The judge's verdicts go with the autograded notebook: the grade report reads its causes there.
    folder = course_root / "autograded" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    (folder / VERDICTS_FILE).write_text(json.dumps({"violations": outcome.violations,
                                                     "verdicts": outcome.verdicts}, indent=1))
    # Under each test cell, which ran nothing in the notebook, the verdict that gave its points.
    write_verdicts(folder / f"{notebook}.ipynb", outcome.verdicts, outcome.violations, outcome.error)
    apply_to_gradebook(db, assignment, notebook, student, outcome)
    return notes, problem, True


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


# ---------------------------------------------------------------------------------------------
# What a task carries back: the gradebook rows of one submission, and its autograded folder.


@dataclass
class SubmissionResult:
    assignment: str
    student: str
    notes: list                     # from the clean re-run
    problem: str                    # why nbgrader did not finish ("" when it did)
    autograded: bool                # nbgrader left an autograded folder: the submission is done
    submission: dict | None         # the scratch gradebook's rows (read_submission); None: none made
    files: dict                     # path under autograded/<student>/<assignment>/ -> bytes
    host: str = ""
    pid: int = 0
    gpus: tuple = ()
    seconds: float = 0.0


def read_submission(db_url: str, assignment: str, student: str) -> dict | None:
    """Everything nbgrader autograde stored for one submission, as plain values."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(db_url) as gb:
        try:
            sub = gb.find_submission(assignment, student)
        except MissingEntry:
            return None
        return {
            "timestamp": sub.timestamp,
            "extension": sub.extension,
            "notebooks": {
                nb.name: {
                    "flagged": nb.flagged,
                    "late_submission_penalty": nb.late_submission_penalty,
                    "grades": {g.name: {k: getattr(g, k) for k in GRADE_FIELDS} for g in nb.grades},
                    "comments": {c.name: {k: getattr(c, k) for k in COMMENT_FIELDS} for c in nb.comments},
                }
                for nb in sub.notebooks
            },
        }


def record_result(course_root: Path, result: SubmissionResult) -> None:
    """Write one task's result into the course: gradebook rows, autograded folder, done marker.

    Only the driver calls this, one result at a time. The rows are those nbgrader autograde
    wrote into the task's copy of the gradebook, so feedback and export read the same values
    the sequential path would have stored.
    """
    import warnings

    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    if result.submission is not None:
        # nbgrader's add_submission builds its rows under autoflush, which SQLAlchemy warns about
        # (nbgrader autograde does the same, out of sight in its own process).
        with warnings.catch_warnings(), Gradebook(f"sqlite:///{course_root / 'build' / 'gradebook.db'}") as gb:
            warnings.simplefilter("ignore", SAWarning)
            gb.update_or_create_student(result.student)
            sub = gb.update_or_create_submission(result.assignment, result.student)
            sub.timestamp = result.submission["timestamp"]
            sub.extension = result.submission["extension"]
            for nb in sub.notebooks:
                saved = result.submission["notebooks"].get(nb.name)
                if saved is None:
                    continue
                nb.flagged = saved["flagged"]
                nb.late_submission_penalty = saved["late_submission_penalty"]
                for grade in nb.grades:
                    for key, value in saved["grades"].get(grade.name, {}).items():
                        setattr(grade, key, value)
                for comment in nb.comments:
                    for key, value in saved["comments"].get(comment.name, {}).items():
                        setattr(comment, key, value)
            gb.db.commit()
    target = course_root / "autograded" / result.student / result.assignment
    if target.exists():
        shutil.rmtree(target)  # what `nbgrader autograde --force` does before it grades again
    _write_tree(target, result.files)
    if result.autograded:
        mark_graded(course_root, result.assignment, result.student, result.problem)


def handed_in(course_root: Path, assignment: str, student: str) -> dict:
    """The files of submitted/<student>/<assignment>/, as grade_in_scratch takes them."""
    return _read_tree(course_root / "submitted" / student / assignment)


def _read_tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} \
        if root.is_dir() else {}


def _write_tree(root: Path, files: dict) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# ---------------------------------------------------------------------------------------------
# The task: a scratch course holding one submission, graded exactly as the course would be.


HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_NOTE = "# (hidden tests: the grader runs them outside this notebook; your score for this cell is theirs)"
STAND_ASIDE_NOTE = ("# (the grader runs this cell's checks outside this notebook, on your answer cell; their verdict, "
                    "which gives your score for this cell, is below)")


def _tests_stand_aside(db_path: Path, course_root: Path, assignments) -> None:
    """nbgrader autograde puts the gradebook's copy of each test cell back into the notebook. In the
    scratch gradebook that copy runs no test: the judge runs every one outside (verify.py), and its
    verdict is written under the cell afterwards (feedback_verdicts.py). So the student's kernel never
    receives a test, hidden or not (nor, then, does the feedback), and the notebook's run costs only
    the student's own cells. A hidden cell keeps its released part with a note; a visible cell keeps
    its code as comments, for the reader of the feedback. The checksum follows, or nbgrader would
    refuse the cell."""
    from nbgrader.api import Gradebook
    from nbgrader.utils import compute_checksum

    with Gradebook(f"sqlite:///{db_path}") as gb:
        for assignment in assignments:
            release = read(course_root / "notebooks" / assignment / f"{ASSIGNMENTS[assignment]}.ipynb")
            for cell in release.cells:
                meta = cell.get("metadata", {}).get("nbgrader", {})
                name = meta.get("grade_id")
                if cell.cell_type != "code" or not name or not meta.get("grade") or meta.get("solution"):
                    continue
                source_cell = gb.find_source_cell(name, ASSIGNMENTS[assignment], assignment)
                if HIDDEN_BEGIN in (source_cell.source or ""):
                    cell.source = cell.source.rstrip("\n") + "\n" + HIDDEN_NOTE
                else:
                    commented = ("# " + line if line else "#" for line in cell.source.rstrip("\n").splitlines())
                    cell.source = "\n".join([STAND_ASIDE_NOTE, *commented])
                source_cell.source = cell.source
                source_cell.checksum = compute_checksum(cell)
        gb.db.commit()


def course_template(course_root: Path, assignments) -> tuple[dict, dict]:
    """What every task needs besides its submission: (common files, {assignment: files}).

    The gradebook goes in as a copy without any submission (assignments, due dates, cells and
    points stay), taken through SQLite's backup so it is consistent even mid-write.
    """
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "gradebook.db"
        with sqlite3.connect(course_root / "build" / "gradebook.db") as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        with sqlite3.connect(copy) as db:
            for table in ("grade", "comment", "submitted_notebook", "submitted_assignment", "student"):
                db.execute(f"DELETE FROM {table}")
        _tests_stand_aside(copy, course_root, assignments)
        with sqlite3.connect(copy) as db:
            db.execute("VACUUM")
        common = {"nbgrader_config.py": (course_root / "nbgrader_config.py").read_bytes(),
                  "build/gradebook.db": copy.read_bytes()}
    per_assignment = {}
    for assignment in assignments:
        files = {f"solutions/{assignment}/{rel}": data
                 for rel, data in _read_tree(course_root / "solutions" / assignment).items()
                 if ".ipynb_checkpoints" not in rel and "__pycache__" not in rel}
        release = course_root / "notebooks" / assignment / f"{ASSIGNMENTS[assignment]}.ipynb"
        files[f"notebooks/{assignment}/{release.name}"] = release.read_bytes()
        per_assignment[assignment] = files
    return common, per_assignment


def _sweep_scratch(parent: Path) -> None:
    """Remove scratch courses of workers that died (their names begin with the worker's PID)."""
    import psutil

    for folder in parent.glob("*-*"):
        try:
            pid = int(folder.name.split("-", 1)[0])
        except ValueError:
            continue
        if not psutil.pid_exists(pid):
            shutil.rmtree(folder, ignore_errors=True)


def grade_in_scratch(common: dict, template: dict, submission: dict, assignment: str, student: str,
                     attempt: int = 1, trace_dir: str | None = None, sandboxed: bool = True,
                     gpus_per_task: float = 0.0) -> SubmissionResult:
    """Grade one submission in a scratch course of its own and return what the course must record.

    This is the body of a Ray task, and also runs without Ray. Everything per submission
    happens here (nbgrader, the clean re-run, and any timing of the student's kernel against
    the reference), so both run on the same device in the same task. Every process it starts
    uses the task's share of the node's cores (autograder.threads): cores / tasks the node runs
    at once (on Ray: one per CPU, or per `gpus_per_task` of its GPUs), all of them without Ray.
    """
    with threads.task_share(threads.ray_tasks_at_once(gpus_per_task)):
        return _grade_in_scratch(common, template, submission, assignment, student, attempt, trace_dir, sandboxed)


def _grade_in_scratch(common, template, submission, assignment, student, attempt, trace_dir, sandboxed):
    start = time.monotonic()
    parent = Path(tempfile.gettempdir()) / SCRATCH_DIR
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_scratch(parent)
    scratch = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{assignment}-", dir=parent))
    gpus = _assigned_gpus()
    # If this worker dies mid-task, the guard stops what it started and removes the scratch.
    guard = subprocess.Popen([sys.executable, "-m", "autograder.grading.task_guard", str(os.getpid()), str(scratch)],
                             start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        _write_tree(scratch, common)
        _write_tree(scratch, template)
        _write_tree(scratch / "submitted" / student / assignment, submission)
        (scratch / "build").mkdir(exist_ok=True)
        if trace_dir:  # where each attempt runs: for the instructor, and for the tests' worker kill
            Path(trace_dir).mkdir(parents=True, exist_ok=True)
            info = {"host": socket.gethostname(), "pid": os.getpid(), "scratch": str(scratch),
                    "gpus": list(gpus), "attempt": attempt}
            tmp = Path(trace_dir) / f".{assignment}--{student}--{attempt}.json"
            tmp.write_text(json.dumps(info))
            tmp.rename(tmp.with_name(tmp.name[1:]))
        notes, problem, autograded = autograde_submission(scratch, assignment, student, sandboxed)
        if not sandboxed:
            notes = ["graded WITHOUT the sandbox (--no-sandbox): this grade is only as trustworthy as "
                     "the submission"] + notes
        return SubmissionResult(
            assignment, student, notes, problem, autograded,
            read_submission(f"sqlite:///{scratch / 'build' / 'gradebook.db'}", assignment, student),
            _read_tree(scratch / "autograded" / student / assignment),
            socket.gethostname(), os.getpid(), tuple(gpus), time.monotonic() - start)
    finally:
        guard.kill()
        guard.wait()
        shutil.rmtree(scratch, ignore_errors=True)


def _assigned_gpus() -> tuple:
    try:
        import ray

        return tuple(str(g) for g in ray.get_gpu_ids()) if ray.is_initialized() else ()
    except Exception:  # outside a Ray worker
        return ()


