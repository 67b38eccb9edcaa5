"""Choose GPU or interpreter before any test module defines a Triton kernel; share one judge
verdict cache across the session (and across pytest-xdist workers)."""
import os
import tempfile
from pathlib import Path

import pytest

from autograder import device

RUNTIME = device.configure(verbose=False)

# The judge's verdicts are a pure function of their spec (answer, locked cells, tests, reference,
# device, versions, the grader's code: verify.judge_cache_path), so a correct answer graded by the
# demo, the Ray class and the robustness tests is judged once per test run. Every nbgrader run
# still happens; writes into the cache are atomic, so workers may share it.
_RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
os.environ.setdefault("COURSE_JUDGE_CACHE", str(Path(tempfile.gettempdir()) / f"course-judge-cache-{_RUN_ID}"))
REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_report_header(config):
    return f"course runtime: {RUNTIME.describe()}"


# Under pytest-xdist (`--dist loadfile`, as course.sh runs the suite) each test file runs on one
# worker, so a module's fixtures are built once; the longest files are handed out first, so that
# none of them starts last.
LONGEST_FIRST = ("test_class_grading.py", "test_robust_grading.py", "test_ray_grading.py", "test_adversarial.py",
                 "test_selfstudy.py", "test_edition.py", "test_instructor_course.py", "test_problem3.py",
                 "test_verdict.py", "test_problem2.py", "test_problem7.py", "test_problem8.py", "test_notebooks.py",
                 "test_sandbox.py")


def pytest_collection_modifyitems(config, items):
    if RUNTIME.interpreter:
        skip = pytest.mark.skip(reason="needs a CUDA GPU that Triton supports")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)

    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: within a file, the collection order stays


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
def recorded_outputs(tmp_path_factory) -> Path:
    """The student edition's recorded outputs (`edition.record_outputs`: every notebook run with the
    reference answer), recorded once per test run and shared by the pytest-xdist workers."""
    import torch
    from filelock import FileLock

    from autograder import edition

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above each worker's own
    table = shared / "recorded_outputs.pt"
    with FileLock(str(shared / "recorded_outputs.lock")):
        if not table.exists():
            partial = table.with_suffix(".partial")
            torch.save(edition.record_outputs(REPO_ROOT, log=lambda *_: None), partial)
            partial.rename(table)
    return table


@pytest.fixture(scope="module")
def student_edition(tmp_path_factory, recorded_outputs) -> Path:
    """The student edition (`autograder publish`), written for each test module that uses it from
    the run's recorded outputs: the edition tests scan and change it, the self-study test runs its
    notebooks."""
    import torch

    from autograder import edition

    table = torch.load(recorded_outputs, weights_only=True)
    return edition.publish(tmp_path_factory.mktemp("student-edition"), REPO_ROOT, log=lambda *_: None,
                           table=table)
