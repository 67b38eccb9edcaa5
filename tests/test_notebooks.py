"""The student notebook is nbgrader's fresh output, and nothing from the solutions leaks into it."""
import json
import re

import nbformat
import pytest

from autograder import problems
from autograder.grading.course import prepare_course, release
from autograder.notebook_code import cell_by_id, grade_id
from autograder.problems import ASSIGNMENTS, problem3

SOURCE = "solutions/problem3/problem3.ipynb"
RELEASED = "notebooks/problem3/problem3.ipynb"


@pytest.fixture(scope="module")
def fresh_releases(tmp_path_factory, repo_root):
    """Every assignment released once by nbgrader into a fresh course: {assignment: notebook path}."""
    course = tmp_path_factory.mktemp("course")
    prepare_course(repo_root, course)
    return {assignment: release(course, assignment) for assignment in ASSIGNMENTS}


def _paths(assignment):
    name = problems.get_spec(assignment).notebook
    return f"solutions/{assignment}/{name}", f"notebooks/{assignment}/{name}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_committed_student_notebook_equals_a_fresh_generation(repo_root, fresh_releases, assignment):
    committed = (repo_root / _paths(assignment)[1]).read_text()
    assert committed == fresh_releases[assignment].read_text(), \
        f"run `python -m autograder release {assignment}` and commit notebooks/"


def test_release_holds_only_the_student_notebook(fresh_releases):
    # The source folder also holds the notebook's paired .py, solutions and hidden tests included.
    for assignment, notebook in fresh_releases.items():
        assert sorted(p.name for p in notebook.parent.iterdir()) == [notebook.name], assignment


def solution_and_hidden_lines(source_nb):
    """Every meaningful line between BEGIN/END SOLUTION or BEGIN/END HIDDEN TESTS that does not
    also appear outside those regions (a shared line such as a call's opening is no leak)."""
    lines, public, inside = [], set(), False
    for cell in source_nb.cells:
        for line in cell.source.splitlines():
            marker = line.strip()
            if marker.startswith("### BEGIN"):
                inside = True
            elif marker.startswith("### END"):
                inside = False
            elif inside and len(marker) > 3 and not marker.startswith("#") and not marker.endswith(("[", "(")):
                lines.append(marker)
            elif not inside:
                public.add(marker)
    return [line for line in lines if line not in public]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_no_solution_or_hidden_test_line_leaks(repo_root, assignment):
    source_path, released_path = _paths(assignment)
    source = nbformat.read(str(repo_root / source_path), as_version=4)
    student_text = "\n".join(c.source for c in nbformat.read(str(repo_root / released_path), as_version=4).cells)
    secret = solution_and_hidden_lines(source)
    assert len(secret) > 20  # the solution and hidden tests are really there to leak
    leaked = [line for line in secret if line in student_text]
    assert not leaked
    assert "BEGIN SOLUTION" not in student_text and "HIDDEN TESTS" not in student_text


def test_student_notebook_has_no_outputs_and_keeps_the_grading_metadata(repo_root):
    nb = json.loads((repo_root / RELEASED).read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    graded = {c["metadata"]["nbgrader"]["grade_id"]: c["metadata"]["nbgrader"]["points"]
              for c in code if c["metadata"].get("nbgrader", {}).get("grade")}
    assert sum(graded.values()) == 12 and len(graded) == 7 and graded["test_performance"] == 2
    stub = cell_by_id(nbformat.reads(json.dumps(nb), as_version=4), problem3.SPEC.student_cell).source
    assert stub.count("raise NotImplementedError()") == 2


def test_source_notebook_is_valid_and_ids_are_unique(repo_root):
    nb = nbformat.read(str(repo_root / SOURCE), as_version=4)
    nbformat.validate(nb)
    ids = [grade_id(c) for c in nb.cells if grade_id(c)]
    assert len(ids) == len(set(ids))
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_setup_cell_configures_triton_before_any_kernel(repo_root):
    nb = nbformat.read(str(repo_root / RELEASED), as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    first_jit = next(i for i, s in enumerate(code) if "@triton.jit" in s)
    setup = next(i for i, s in enumerate(code) if "configure()" in s)
    assert setup < first_jit
    assert not any(re.search(r"^\s*import triton", s, re.M) for s in code[:setup + 1])
