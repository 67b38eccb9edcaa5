"""An nbgrader course folder: made ready from this repository, released, and asked what was handed in.

The layout is nbgrader's: nbgrader_config.py, solutions/ (source), notebooks/ (release),
submitted/<student>/<assignment>/, autograded/, feedback/, and the gradebook in build/.
init_course makes a folder ready for submissions (the instructor's `autograder course init`, the
demo's staging and `autograder release` all go through it); missing_for_grading says what a
folder still lacks before it can be graded.
"""
from __future__ import annotations

import filecmp
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from .nbgrader_cli import must, run_nbgrader
from .scratch import ASSIGNMENTS, DONE_MARKER

CONFIG = "nbgrader_config.py"
GRADEBOOK = Path("build") / "gradebook.db"
INIT_COMMAND = "python -m autograder course init"


def prepare_course(repo_root: Path, course_root: Path, keep_config: bool = False) -> None:
    """A course folder holding the course's nbgrader config (an existing one stays with
    `keep_config`) and a fresh copy of the source notebooks; nothing else in it is touched."""
    course_root.mkdir(parents=True, exist_ok=True)
    (course_root / "build").mkdir(exist_ok=True)
    if not (keep_config and (course_root / CONFIG).exists()):
        shutil.copy(repo_root / CONFIG, course_root / CONFIG)
    if (course_root / "solutions").exists():
        shutil.rmtree(course_root / "solutions")
    shutil.copytree(repo_root / "solutions", course_root / "solutions",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))


def release(course_root: Path, assignment: str) -> Path:
    """nbgrader generate_assignment: the student notebook, solutions and hidden tests removed;
    the assignment, its notebook, cells and points recorded in the gradebook."""
    must(run_nbgrader(course_root, "generate_assignment", assignment, "--force"))
    return release_path(course_root, assignment)


def release_all(course_root: Path) -> None:
    """nbgrader generate_assignment of every assignment in the course's source folder at once."""
    must(run_nbgrader(course_root, "generate_assignment", "*", "--force"))


def release_path(course_root: Path, assignment: str) -> Path:
    """The released (student) notebook of `assignment` in the course."""
    return course_root / "notebooks" / assignment / f"{ASSIGNMENTS[assignment]}.ipynb"


@dataclass
class InitReport:
    """What init_course did to a course folder, in words for the instructor."""
    course_root: Path
    created: bool                                   # the folder had no gradebook before
    released: list = field(default_factory=list)    # assignments released (gradebook updated)
    kept: list = field(default_factory=list)        # what was there and stays as it was
    notes: list = field(default_factory=list)

    def describe(self) -> str:
        root = self.course_root
        lines = [f"{'made' if self.created else 'brought up to date'} the course folder {root}",
                 f"  config:    {root / CONFIG}",
                 f"  gradebook: {root / GRADEBOOK} (assignments {', '.join(self.released)})",
                 f"  sources:   {root / 'solutions'} (copied from this repository)",
                 f"  released:  {root / 'notebooks'}/<assignment>/<assignment>.ipynb"]
        lines += [f"  kept: {k}" for k in self.kept]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"submissions go in {root / 'submitted'}/<student>/<assignment>/<assignment>.ipynb "
                     "(nbgrader's layout), or `python -m autograder import COURSE ZIP --assignment A` "
                     "for an LMS zip")
        return "\n".join(lines)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _what_is_kept(course_root: Path) -> list[str]:
    kept = []
    db = course_root / GRADEBOOK
    if db.exists():
        with sqlite3.connect(db) as con:
            students = con.execute("SELECT COUNT(*) FROM student").fetchone()[0]
            graded = con.execute("SELECT COUNT(*) FROM submitted_assignment").fetchone()[0]
        kept.append(f"the gradebook ({_count(students, 'student')}, {_count(graded, 'graded submission')})")
    handed_in = [p for p in (course_root / "submitted").glob("*/*") if p.is_dir()]
    if handed_in:
        kept.append(f"submitted/ ({_count(len(handed_in), 'submission')})")
    graded_folders = list((course_root / "autograded").glob(f"*/*/{DONE_MARKER}"))
    if graded_folders:
        kept.append(f"autograded/ ({len(graded_folders)} graded)")
    for name in ("feedback", "imports"):
        if (course_root / name).is_dir():
            kept.append(f"{name}/")
    kept += [name for name in ("grades.csv", "grade_report.csv", "grades.png") if (course_root / name).exists()]
    return kept


def init_course(repo_root: Path, course_root: Path, assignments=None) -> InitReport:
    """Make `course_root` an nbgrader course folder ready for submissions of `assignments`
    (default: every problem): the course's config, the source notebooks copied from `repo_root`,
    every assignment released (nbgrader generate_assignment), which records it, its notebook,
    cells and points in the gradebook (build/gradebook.db).

    Running it again on a course brings sources and releases up to date and keeps everything
    else: submissions, grades, the gradebook, feedback, exports, and an nbgrader_config.py that
    was edited there.
    """
    course_root = Path(course_root).resolve()
    chosen = list(ASSIGNMENTS if assignments is None else assignments)
    report = InitReport(course_root, created=not (course_root / GRADEBOOK).exists())
    report.kept = _what_is_kept(course_root)
    config = course_root / CONFIG
    if config.exists() and not filecmp.cmp(config, repo_root / CONFIG, shallow=False):
        report.kept.append(f"{CONFIG} (it differs from the repository's; delete it and run this again to "
                           "take the repository's)")
    prepare_course(repo_root, course_root, keep_config=True)
    if sorted(chosen) == sorted(p.name for p in (course_root / "solutions").iterdir() if p.is_dir()):
        # One nbgrader process releases them all ("*" matches every source folder), instead of
        # one process, with its seconds of start-up, per assignment.
        release_all(course_root)
    else:
        for assignment in chosen:
            release(course_root, assignment)
    report.released.extend(chosen)
    return report


def missing_for_grading(course_root: Path, assignments) -> list[str]:
    """What `course_root` lacks before `assignments` can be graded there (empty: nothing)."""
    course_root = Path(course_root)
    if not course_root.is_dir():
        return [f"the folder {course_root} itself"]
    missing = []
    if not (course_root / CONFIG).exists():
        missing.append(CONFIG)
    known: set[str] = set()
    db = course_root / GRADEBOOK
    if not db.exists():
        missing.append(f"the gradebook {GRADEBOOK}")
    else:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                known = {a for (a,) in con.execute(
                    "SELECT assignment.name FROM assignment JOIN notebook ON notebook.assignment_id = assignment.id")}
        except sqlite3.Error as exc:
            missing.append(f"a readable gradebook ({GRADEBOOK}: {exc})")
            known = set(assignments)
    for assignment in assignments:
        notebook = f"{ASSIGNMENTS[assignment]}.ipynb"
        if not (course_root / "solutions" / assignment / notebook).exists():
            missing.append(f"the source notebook solutions/{assignment}/{notebook}")
        if not release_path(course_root, assignment).exists():
            missing.append(f"the released notebook notebooks/{assignment}/{notebook}")
        if db.exists() and assignment not in known:
            missing.append(f"{assignment} in the gradebook")
    return missing


def submitted_students(course_root: Path, assignment: str) -> list[str]:
    base = course_root / "submitted"
    return sorted(p.name for p in base.iterdir() if (p / assignment).is_dir()) if base.exists() else []


def assignments_with_submissions(course_root: Path) -> list[str]:
    """Every assignment of the course that someone handed in, in the course's order."""
    return [a for a in ASSIGNMENTS if submitted_students(course_root, a)]


def use_judge_cache(course_root: Path) -> None:
    """Keep the judge's verdicts in the course (verify.judge_cache_path), unless told elsewhere."""
    os.environ.setdefault("COURSE_JUDGE_CACHE", str(Path(course_root).resolve() / "build" / "judge-cache"))
