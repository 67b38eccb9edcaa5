"""Every problem's notebooks, one test per property, parametrised over the registered assignments
(a new problem is checked as soon as its module exists): the student notebook is nbgrader's fresh
output with nothing from the solutions in it, both notebooks are valid and output-free with the
grading metadata intact, the setup cell is the template's and comes first, and every sample
submission still applies to the solution. (The answer policy's verdict on each problem's solution,
stub and samples: tests/test_answer_policy.py.)"""
import re

import nbformat
import pytest

from autograder import notebook_template, problems
from autograder.grading.course import prepare_course, release_all, release_path
from autograder.grading.samples import ADVERSARIAL, GPU_FAULTS, PERFORMANCE, SAMPLES, apply_edits
from autograder.notebook_code import cell_by_id, grade_id, read, strip_markers
from autograder.problems import ASSIGNMENTS, CORRECTNESS_POINTS

# What each problem's notebooks hold: graded cells, and `raise NotImplementedError()` stubs in the
# released answer cell (one per function the student writes). A problem not listed here gets the
# generic checks only.
GRADED_CELLS = {"problem1": 8, "problem2": 6, "problem2b": 6, "problem3": 7, "problem4": 8, "problem5": 8,
                "problem6": 8, "problem7": 6, "problem8": 8}
STUBS = {"problem1": 3, "problem2": 2, "problem2b": 2, "problem3": 2, "problem4": 3, "problem5": 2, "problem6": 2,
         "problem7": 5, "problem8": 7}
# Every sample submission of every kind, by assignment.
ALL_SAMPLES = [(assignment, sample) for assignment in ASSIGNMENTS
               for kind in (SAMPLES, ADVERSARIAL, GPU_FAULTS, PERFORMANCE) for sample in kind[assignment]]


def _paths(assignment):
    name = problems.get_spec(assignment).notebook
    return f"solutions/{assignment}/{name}", f"notebooks/{assignment}/{name}"


def _notebooks(repo_root, assignment):
    """(source notebook, released notebook) of `assignment`."""
    source, released = _paths(assignment)
    return read(repo_root / source), read(repo_root / released)


def _graded_points(nb) -> dict:
    return {grade_id(c): c.metadata.nbgrader["points"] for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")}


def _solution(source_nb, assignment) -> str:
    return strip_markers(cell_by_id(source_nb, problems.get_spec(assignment).student_cell).source)


@pytest.fixture(scope="module")
def fresh_releases(tmp_path_factory, repo_root):
    """Every assignment released by nbgrader into a fresh course, in one run (as `course init`
    does): {assignment: notebook path}."""
    course = tmp_path_factory.mktemp("course")
    prepare_course(repo_root, course)
    release_all(course)
    return {assignment: release_path(course, assignment) for assignment in ASSIGNMENTS}


# --- the release is nbgrader's, and keeps nothing secret ----------------------------------------


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
    source, released = _notebooks(repo_root, assignment)
    student_text = "\n".join(c.source for c in released.cells)
    secret = solution_and_hidden_lines(source)
    assert len(secret) > 20  # the solution and hidden tests are really there to leak
    leaked = [line for line in secret if line in student_text]
    assert not leaked
    assert "BEGIN SOLUTION" not in student_text and "HIDDEN TESTS" not in student_text


# --- both notebooks: valid, no outputs, the grading metadata intact ------------------------------


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_notebooks_are_valid_without_outputs_and_ids_are_unique(repo_root, assignment):
    for nb in _notebooks(repo_root, assignment):
        nbformat.validate(nb)
        assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")
        ids = [c.id for c in nb.cells]
        assert len(ids) == len(set(ids))
        grade_ids = [grade_id(c) for c in nb.cells if grade_id(c)]
        assert len(grade_ids) == len(set(grade_ids))


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_graded_cells_keep_their_points_and_are_locked(repo_root, assignment):
    """Correctness is worth CORRECTNESS_POINTS, speed the spec's performance points (one cell,
    `test_performance`); the release has the source's graded cells with the same points, each
    locked (nbgrader restores a locked cell a student edits)."""
    source, released = _notebooks(repo_root, assignment)
    graded = _graded_points(source)
    assert _graded_points(released) == graded
    performance = problems.performance_points(assignment)
    assert graded.get("test_performance", 0) == performance
    assert sum(graded.values()) == CORRECTNESS_POINTS + performance
    assert len(graded) == GRADED_CELLS.get(assignment, len(graded)) and len(graded) >= 2
    for nb in (source, released):
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("grade"):
                assert cell.metadata.nbgrader["locked"] and not cell.metadata.nbgrader["solution"], grade_id(cell)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_released_answer_cell_is_a_stub_per_function(repo_root, assignment):
    source, released = _notebooks(repo_root, assignment)
    stub = cell_by_id(released, problems.get_spec(assignment).student_cell).source
    stubs = stub.count("raise NotImplementedError()")
    assert stubs == STUBS.get(assignment, stubs) and stubs >= 1
    assert _solution(source, assignment) not in stub


# --- the setup cell ------------------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_setup_cell_is_the_templates_and_the_first_code_cell(repo_root, assignment):
    """The template's badge and setup cells (code and nbgrader metadata); in both notebooks the
    setup cell configures Triton before any cell imports it or defines a kernel."""
    source, released = _notebooks(repo_root, assignment)
    differences = notebook_template.differences(source, assignment, problems.get_spec(assignment).notebook)
    assert not differences, f"{differences}; run `python -m autograder release {assignment}`"
    for nb in (source, released):
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert grade_id(code[0]) == notebook_template.SETUP_ID
        assert code[0].source == notebook_template.setup_source() and "configure()" in code[0].source
        assert not re.search(r"^\s*(import triton|from triton)", code[0].source, re.M)
        kernels = "@triton.jit" in "".join(c.source for c in code)
        assert kernels == (problems.get_spec(assignment).answer_policy == "triton")


# --- the samples -------------------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_samples_hold_the_correct_and_untouched_answers_and_named_mistakes(assignment):
    by_name = {s.name: s for s in SAMPLES[assignment]}
    correct, untouched = by_name["correct"], by_name["untouched"]
    assert correct.expected_points == CORRECTNESS_POINTS and not (correct.edits or correct.extra_cell)
    assert untouched.untouched and untouched.expected_points == 0 and untouched.expected_cause == "not_implemented"
    mistakes = [s for s in SAMPLES[assignment] if s.expected_cause and not s.untouched]
    assert len(mistakes) >= 3  # typical mistakes, each named
    for sample in SAMPLES[assignment]:
        if sample.expected_points is not None and sample.expected_points < CORRECTNESS_POINTS:
            assert sample.expected_cause or sample.expected_note, sample.name


@pytest.mark.parametrize("assignment,sample", ALL_SAMPLES, ids=[f"{a}-{s.name}" for a, s in ALL_SAMPLES])
def test_every_sample_edit_still_applies_to_the_solution(repo_root, assignment, sample):
    """Each sample's edits still change the solution (an edit that no longer applies raises)."""
    source, _ = _notebooks(repo_root, assignment)
    solution = _solution(source, assignment)
    assert (apply_edits(solution, sample.edits) != solution) == bool(sample.edits)
