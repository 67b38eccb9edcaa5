"""Where this course lives: the one place that names its repository.

Everything a learner clicks or installs is derived from the two values below:

* the "Open in Colab" badge at the top of every student notebook
  (`colab_url("problem3")` ->
  colab.research.google.com/github/<owner>/<repo>/blob/<branch>/notebooks/problem3/problem3.ipynb);
* the pip spec of the notebooks' setup cell (`pip_spec()` -> git+https://github.com/<owner>/<repo>@<branch>),
  which Colab uses to install the course package.

A fork or a mirror changes REPOSITORY (and BRANCH) here, then runs `python -m autograder release`:
the release command rewrites the badge and setup cells of the source notebooks from this file before
nbgrader generates the student notebooks, so no address is ever edited by hand in a notebook.
"""
from __future__ import annotations

from urllib.parse import urlparse

REPOSITORY = "https://github.com/flash-attention-course/flash-attention-course"
BRANCH = "main"

NOTEBOOKS_DIR = "notebooks"       # nbgrader's release directory (nbgrader_config.py)
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"


def github_path(repository: str = REPOSITORY) -> str:
    """'owner/name' of a GitHub repository address (Colab opens notebooks from GitHub only)."""
    url = urlparse(repository)
    parts = [p for p in url.path.strip("/").removesuffix(".git").split("/") if p]
    if url.netloc != "github.com" or len(parts) != 2:
        raise ValueError(f"REPOSITORY must look like https://github.com/<owner>/<name>, not {repository!r}")
    return "/".join(parts)


def notebook_path(assignment: str, notebook: str | None = None) -> str:
    """The student notebook's path inside the repository."""
    return f"{NOTEBOOKS_DIR}/{assignment}/{notebook or assignment + '.ipynb'}"


def colab_url(assignment: str, notebook: str | None = None, repository: str = REPOSITORY,
              branch: str = BRANCH) -> str:
    """Colab's address for the student notebook of `assignment` on `branch`."""
    return (f"https://colab.research.google.com/github/{github_path(repository)}/blob/{branch}/"
            f"{notebook_path(assignment, notebook)}")


def pip_spec(repository: str = REPOSITORY, branch: str = BRANCH) -> str:
    """What pip installs the course package from: the same repository and branch as the notebooks,
    so a notebook never runs against checks from another version of the course."""
    return f"git+{repository.removesuffix('.git')}.git@{branch}"
