"""Choose GPU or interpreter before any test module defines a Triton kernel."""
from pathlib import Path

import pytest

from autograder import device

RUNTIME = device.configure(verbose=False)
REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CLASS_SIZE = 20


def pytest_report_header(config):
    return f"course runtime: {RUNTIME.describe()}"


def pytest_collection_modifyitems(config, items):
    if RUNTIME.interpreter:
        skip = pytest.mark.skip(reason="needs a CUDA GPU that Triton supports")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def runtime():
    return RUNTIME


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def reference_kernel():
    """A correct Triton attention kernel (problem 3's reference): the well-behaved function that the
    tests of the generic checks wrap, break or time."""
    from autograder import problems

    return problems.reference_module("problem3", REPO_ROOT)


@pytest.fixture(scope="session")
def sequential_demo(tmp_path_factory):
    """The bundled samples of every assignment graded once, one after another, through nbgrader
    (grading.demo.run_demo): (course folder, {(student, assignment): SubmissionGrade}, expected points).
    Tests that compare another way of grading with the sequential one share this run."""
    from autograder.grading.demo import run_demo

    course = tmp_path_factory.mktemp("sequential-demo") / "course"
    # A class of 20 taken in turn from every problem's samples (correct, untouched and the first
    # mistakes of each): the whole bundled set is `bash course.sh demo`, too long for CI.
    run, expected = run_demo(REPO_ROOT, course, progress=False, class_size=DEMO_CLASS_SIZE)
    return course, {(r.student, r.assignment): r for r in run.rows}, expected
