"""Where this course lives: the one place that names its repositories.

There are two. This one, the course repository (solutions, hidden tests, the grading pipeline),
stays private. The student edition, written by `python -m autograder publish DEST` (notebooks and
the student-facing package, no solution line), is published as a repository of its own, and
everything a learner clicks or installs points there:

* the "Open in Colab" badge at the top of every student notebook
  (`colab_url("problem3")` ->
  colab.research.google.com/github/<owner>/<repo>/blob/<branch>/notebooks/problem3/problem3.ipynb);
* the pip spec of the notebooks' setup cell (`pip_spec()` -> git+https://github.com/<owner>/<repo>@<branch>),
  which Colab uses to install the course package.

A fork or a mirror changes STUDENT_REPOSITORY (and STUDENT_BRANCH) here, then runs
`python -m autograder release` and publishes: the release command rewrites the badge and setup cells
of the source notebooks from this file before nbgrader generates the student notebooks, so no
address is ever edited by hand in a notebook. This file itself stays out of the student edition.
"""
from __future__ import annotations

from urllib.parse import urlparse

# The student edition: public, what every badge and setup cell points at.
STUDENT_REPOSITORY = "https://github.com/flash-attention-course/flash-attention-course"
STUDENT_BRANCH = "main"
# This repository: private, never named in anything a student gets.
COURSE_REPOSITORY = "https://github.com/flash-attention-course/instructor"

NOTEBOOKS_DIR = "notebooks"       # nbgrader's release directory (nbgrader_config.py)
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"


def github_path(repository: str = STUDENT_REPOSITORY) -> str:
    """'owner/name' of a GitHub repository address (Colab opens notebooks from GitHub only)."""
    url = urlparse(repository)
    parts = [p for p in url.path.strip("/").removesuffix(".git").split("/") if p]
    if url.netloc != "github.com" or len(parts) != 2:
        raise ValueError(f"a repository must look like https://github.com/<owner>/<name>, not {repository!r}")
    return "/".join(parts)


def notebook_path(assignment: str, notebook: str | None = None) -> str:
    """The student notebook's path inside the student edition (and this repository)."""
    return f"{NOTEBOOKS_DIR}/{assignment}/{notebook or assignment + '.ipynb'}"


def colab_url(assignment: str, notebook: str | None = None, repository: str = STUDENT_REPOSITORY,
              branch: str = STUDENT_BRANCH) -> str:
    """Colab's address for the student notebook of `assignment` on `branch`."""
    return (f"https://colab.research.google.com/github/{github_path(repository)}/blob/{branch}/"
            f"{notebook_path(assignment, notebook)}")


def pip_spec(repository: str = STUDENT_REPOSITORY, branch: str = STUDENT_BRANCH) -> str:
    """What pip installs the course package from: the student edition, the same repository and branch
    as the notebooks, so a notebook never runs against checks from another version of the course."""
    return f"git+{repository.removesuffix('.git')}.git@{branch}"
