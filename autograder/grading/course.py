"""An nbgrader course folder: staged from this repository, released, and asked what was handed in.

The layout is nbgrader's: nbgrader_config.py, solutions/ (source), notebooks/ (release),
submitted/<student>/<assignment>/, autograded/, feedback/, and the gradebook in build/.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .nbgrader_cli import must, run_nbgrader
from .scratch import ASSIGNMENTS


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
    return release_path(course_root, assignment)


def release_path(course_root: Path, assignment: str) -> Path:
    """The released (student) notebook of `assignment` in the course."""
    return course_root / "notebooks" / assignment / f"{ASSIGNMENTS[assignment]}.ipynb"


def submitted_students(course_root: Path, assignment: str) -> list[str]:
    base = course_root / "submitted"
    return sorted(p.name for p in base.iterdir() if (p / assignment).is_dir()) if base.exists() else []


def assignments_with_submissions(course_root: Path) -> list[str]:
    """Every assignment of the course that someone handed in, in the course's order."""
    return [a for a in ASSIGNMENTS if submitted_students(course_root, a)]


def use_judge_cache(course_root: Path) -> None:
    """Keep the judge's verdicts in the course (verify.judge_cache_path), unless told elsewhere."""
    os.environ.setdefault("COURSE_JUDGE_CACHE", str(Path(course_root).resolve() / "build" / "judge-cache"))
