"""Choose GPU or interpreter before any test module defines a Triton kernel; give each pytest-xdist
worker its share of the cores; share one judge verdict cache across the session (and across
workers)."""
import os
import tempfile
from pathlib import Path

import pytest

from autograder import device, threads

RUNTIME = device.configure(verbose=False)

# pytest-xdist runs several workers on the machine's cores: each takes its share (autograder.threads),
# which every grading task, judge, candidate and notebook kernel it starts then splits. Without it
# each of those runs one thread per core, and the workers' OpenMP threads spin against each other:
# a wrong problem 3 answer's judge took 26 CPU-seconds with two threads and 20 with one, in the
# same time, on two cores.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
if _WORKERS > 1 and threads.cap() is None:
    os.environ.update({name: str(threads.share(_WORKERS)) for name in threads.VARIABLES})
    threads.apply()

# The judge's verdicts are a pure function of their spec (answer, locked cells, tests, reference,
# device, versions, the grader's code: verify.judge_cache_path), so a correct answer graded by the
# demo, the Ray class and the robustness tests is judged once per test run. Every nbgrader run
# still happens; writes into the cache are atomic, so workers may share it.
_RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
os.environ.setdefault("COURSE_JUDGE_CACHE", str(Path(tempfile.gettempdir()) / f"course-judge-cache-{_RUN_ID}"))
REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_report_header(config):
    return f"course runtime: {RUNTIME.describe()}"


# Under pytest-xdist (`--dist loadfile --no-loadscope-reorder`, as course.sh runs the suite) each
# test file runs on one worker, so a module's fixtures are built once; the longest files are handed
# out first, so that none of them starts last. The Ray class comes after the robustness tests: it
# compares itself with the demo class (demo_class, built once per run by whichever worker needs it
# first), which is then done. The edition tests come after two other files for the same reason:
# they need the recorded outputs (recorded_outputs), which the self-study tests on the other worker
# start recording, and waiting for them left one core idle for over a minute.
LONGEST_FIRST = ("test_class_grading.py", "test_robust_grading.py", "test_ray_grading.py", "test_adversarial.py",
                 "test_selfstudy.py", "test_instructor_course.py", "test_problem3.py", "test_edition.py",
                 "test_verdict.py", "test_problem2.py", "test_problem7.py", "test_problem8.py", "test_notebooks.py",
                 "test_compile_sm90.py", "test_sandbox.py")


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

    shared = _run_folder(tmp_path_factory)
    table = shared / "recorded_outputs.pt"
    with FileLock(str(shared / "recorded_outputs.lock")):
        if not table.exists():
            partial = table.with_suffix(".partial")
            torch.save(edition.record_outputs(REPO_ROOT, log=lambda *_: None), partial)
            partial.rename(table)
    return table


def _run_folder(tmp_path_factory) -> Path:
    """The test run's folder, which every pytest-xdist worker shares (above each worker's own)."""
    shared = tmp_path_factory.getbasetemp()
    return shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared


@pytest.fixture(scope="session")
def demo_class(tmp_path_factory):
    """The demo class graded once, one submission after another, through nbgrader
    (grading.demo.run_demo), once per test run and shared by the pytest-xdist workers: checked by
    tests/test_class_grading.py, and the Ray class is compared with it (tests/test_ray_grading.py).
    Returns (course folder, {(student, assignment): SubmissionGrade}, expected points)."""
    import json
    from dataclasses import asdict

    from filelock import FileLock

    from autograder.grading.demo import run_demo
    from autograder.grading.report import SubmissionGrade
    from tests.helpers import DEMO_CLASS

    shared = _run_folder(tmp_path_factory)
    course, saved = shared / "sequential-demo" / "course", shared / "sequential-demo.json"
    with FileLock(str(shared / "sequential-demo.lock")):
        if not saved.exists():
            # The whole bundled set is `bash course.sh demo`, too long for CI. The driver's environment
            # says "a graded notebook's run" (feedback_run.py): the judge must drop it, or its
            # performance gate would stand aside (test_class_grading.py checks that it did not).
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("COURSE_FEEDBACK_RUN", "1")
                run, expected = run_demo(REPO_ROOT, course, progress=False, only=DEMO_CLASS)
            partial = saved.with_suffix(".partial")
            partial.write_text(json.dumps({"rows": [asdict(r) for r in run.rows],
                                           "expected": [[s, a, p] for (s, a), p in expected.items()]}))
            partial.rename(saved)
    data = json.loads(saved.read_text())
    rows = [SubmissionGrade(**r) for r in data["rows"]]
    return course, {(r.student, r.assignment): r for r in rows}, {(s, a): p for s, a, p in data["expected"]}


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
