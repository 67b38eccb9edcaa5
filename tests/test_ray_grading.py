"""Grading a class end to end through real nbgrader on Ray.

A local two-CPU Ray cluster grades, in parallel, a submission of every problem the demo class
(conftest.demo_class, graded one after another) leaves out, and problems 1 and 3 which it shares
with it: each one's correct answer, but problem 1's first named mistake. Between the two classes
every problem is graded through real nbgrader. The worker of the first task is killed in the
middle of it, which must cost nothing (its task is retried and graded); a second run must grade
nothing twice. The submissions it shares with the demo class graded one after another
(conftest.demo_class: problem 1's mistake and problem 3's correct answer) must get the same grades,
nbgrader export lines and grade report lines there: what a course holds does not depend on the
grader. Lighter tests check the dispatcher's retry and time limit on trivial tasks, and that
everything else works without Ray.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from autograder.grading.autograde import Job, format_run, grade
from autograder.grading.demo import stage_demo
from autograder.grading.export import write_rows
from autograder.grading.ray_grading import longest_first
from autograder.grading.scratch import is_graded
from autograder.problems import ASSIGNMENTS, course_order
from tests.helpers import DEMO_CLASS, DEMO_PROBLEMS, first_named_mistake

try:
    import ray

    from autograder.grading.ray_grading import RayGrader, dispatch, start_local_ray
except ImportError:  # Ray is an optional extra: the test without it runs all the same
    ray = None

# The correct answer of every problem the demo class leaves out (the demo class grades its problems'
# named mistakes), and problem 1's first named mistake and problem 3's correct answer, which the
# demo class grades too: the Ray class shares a PyTorch problem's submission and a Triton
# problem's with it, and is compared with it. (Problem 1's correct answer is graded by the
# README's commands, tests/test_instructor_course.py.)
SHARED_PROBLEMS = ("problem1", "problem3")
RAY_CLASS = {a: {first_named_mistake(a) if a == "problem1" else "correct"} for a in ASSIGNMENTS
             if a not in DEMO_PROBLEMS or a in SHARED_PROBLEMS}
CLASS_SIZE = len(RAY_CLASS)
SHARED = {(s, a) for a, names in RAY_CLASS.items() for s in names if s in DEMO_CLASS.get(a, ())}


@pytest.fixture(scope="module")
def cluster():
    if ray is None:
        pytest.skip("Ray is not installed (pip install -e '.[scale]')")
    if ray.is_initialized():
        ray.shutdown()
    try:
        start_local_ray(num_cpus=2)
    except Exception:
        # On a busy machine (the other worker grading the demo class) Ray's metrics agent may miss
        # the raylet's 30 s wait for its port file ("The current node timed out during startup"):
        # a node that never came up, not a grading failure; start it once more.
        ray.shutdown()
        start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


class Killer(threading.Thread):
    """Waits for the first attempt of one submission to start grading, then SIGKILLs its worker."""

    def __init__(self, trace_dir: Path, victim: tuple):
        super().__init__(daemon=True)
        self.trace = trace_dir / f"{victim[1]}--{victim[0]}--1.json"
        self.killed = None

    def run(self):
        import psutil

        deadline = time.monotonic() + 900
        while not self.trace.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not self.trace.exists():
            return
        info = json.loads(self.trace.read_text())
        # Mid-task: nbgrader (whose command line names the scratch course) is running.
        while time.monotonic() < deadline:
            if any(info["scratch"] in " ".join(p.info["cmdline"] or ())
                   for p in psutil.process_iter(["cmdline"])):
                break
            time.sleep(0.2)
        time.sleep(2)
        os.kill(info["pid"], signal.SIGKILL)
        self.killed = info


@pytest.fixture(scope="module")
def ray_class(cluster, tmp_path_factory, repo_root):
    """A submission of every problem graded on the local cluster, the worker of the first one
    killed mid-task, then the same command run again."""
    base = tmp_path_factory.mktemp("ray-class")
    course, trace = base / "course", base / "trace"
    staged = stage_demo(repo_root, course, only=RAY_CLASS)
    chosen = sorted(staged, key=lambda key: (ASSIGNMENTS.index(key[1]), key[0]))
    victim = max(chosen, key=lambda key: course_order(key[1]))  # the first task to start (longest_first)
    killer = Killer(trace, victim)
    killer.start()
    start = time.monotonic()
    first = grade(course, grader=RayGrader(trace_dir=str(trace)), progress=False)
    first_wall = time.monotonic() - start
    killer.join(timeout=5)
    write_rows(first.rows, course / "grade_report.csv")
    exported = (course / "grades.csv").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (course / "autograded").rglob("*.ipynb")}
    second = grade(course, grader=RayGrader(), progress=False)
    print(f"\nRay, 2 CPUs, {len(chosen)} submissions: {first_wall:.1f} s\n{format_run(first)}\n"
          f"second run:\n{format_run(second)}")
    return dict(course=course, trace=trace, chosen=chosen, staged=staged, victim=victim, killer=killer,
                first=first, second=second, exported=exported, stamps=stamps)


@pytest.mark.slow
def test_a_class_of_several_problems_is_graded_in_parallel(ray_class):
    first = ray_class["first"]
    assert len(first.rows) == len(ray_class["chosen"]) >= CLASS_SIZE
    assert {a for _, a in ray_class["chosen"]} == set(RAY_CLASS)
    # With the demo class, every problem is graded through nbgrader somewhere in the suite.
    assert set(RAY_CLASS) | set(DEMO_PROBLEMS) == set(ASSIGNMENTS)
    assert first.slots == 2 and not first.failures
    assert sum(c["graded"] for c in first.counts.values()) == len(ray_class["chosen"])
    # Two at a time: some attempts overlapped in time on two different workers.
    pids = {json.loads(p.read_text())["pid"] for p in ray_class["trace"].glob("*.json")}
    assert len(pids) >= 2


@pytest.fixture(scope="module")
def sequential(demo_class):
    """The demo class graded one after another (conftest.demo_class), its rows of the submissions
    the Ray class shares with it: (course folder, {(student, assignment): SubmissionGrade})."""
    course, rows, _ = demo_class
    return course, {key: row for key, row in rows.items() if key in SHARED}


@pytest.mark.slow
def test_grades_are_deserved_and_equal_the_sequential_run(ray_class, sequential):
    _, seq_rows = sequential
    assert set(seq_rows) == SHARED and {a for _, a in SHARED} == {"problem1", "problem3"}
    assert set(seq_rows) <= {(r.student, r.assignment) for r in ray_class["first"].rows}
    for row in ray_class["first"].rows:
        assert row.score == ray_class["staged"][(row.student, row.assignment)], row.student
        seq = seq_rows.get((row.student, row.assignment))
        if seq is not None:
            assert (row.score, row.max_score, row.failed_tests, row.causes, row.problem, row.notes) == \
                   (seq.score, seq.max_score, seq.failed_tests, seq.causes, seq.problem, seq.notes), row.student


@pytest.mark.slow
def test_the_csv_files_equal_the_sequential_ones_for_the_same_submissions(ray_class, sequential):
    seq_course, seq_rows = sequential

    def read(text):
        rows = list(csv.reader(text.splitlines()))
        return rows[0], rows[1:]

    # nbgrader's export has a line per (assignment, student in the gradebook): each line of the
    # Ray course for a submission graded in both is the sequential course's line, in the same order.
    ray_header, ray_lines = read(ray_class["exported"])
    seq_header, seq_lines = read((seq_course / "grades.csv").read_text())
    both = {(a, s) for s, a in seq_rows}
    ray_lines = [r for r in ray_lines if (r[0], r[3]) in both]
    assert ray_header == seq_header and len(ray_lines) == len(both)
    assert ray_lines == [r for r in seq_lines if (r[0], r[3]) in both]
    # The grade report: the same line for each of those submissions, in the same order.
    ray_header, ray_lines = read((ray_class["course"] / "grade_report.csv").read_text())
    seq_header, seq_lines = read((seq_course / "grade_report.csv").read_text())
    assert ray_header == seq_header and len(ray_lines) == len(ray_class["chosen"])
    shared = [r for r in seq_lines if (r[0], r[1]) in seq_rows]
    assert len(shared) == len(seq_rows)
    assert [r for r in ray_lines if (r[0], r[1]) in seq_rows] == shared


@pytest.mark.slow
def test_a_worker_killed_mid_task_loses_nothing(ray_class):
    import psutil

    killed, (student, assignment) = ray_class["killer"].killed, ray_class["victim"]
    assert killed is not None, "the victim's first attempt never started"
    retry = json.loads((ray_class["trace"] / f"{assignment}--{student}--2.json").read_text())
    assert retry["pid"] != killed["pid"]
    first = ray_class["first"]
    assert first.counts[assignment]["retried"] == 1 and not first.failures
    row = next(r for r in first.rows if (r.student, r.assignment) == (student, assignment))
    assert row.score == ray_class["staged"][(student, assignment)] and not row.problem
    assert is_graded(ray_class["course"], assignment, student)
    # What the dead worker left running (nbgrader, its notebook kernel) is stopped by the raylet,
    # and its scratch course is swept by a later task on the node.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = [p for p in psutil.process_iter(["cmdline"]) if killed["scratch"] in " ".join(p.info["cmdline"] or ())]
        if not left:
            break
        time.sleep(1)
    assert not left, [p.info["cmdline"] for p in left]
    assert not Path(killed["scratch"]).exists()


@pytest.mark.slow
def test_a_second_run_grades_nothing_twice(ray_class):
    first, second = ray_class["first"], ray_class["second"]
    assert sum(c["graded"] for c in second.counts.values()) == 0
    assert sum(c["kept"] for c in second.counts.values()) == len(ray_class["chosen"])
    assert [(r.student, r.assignment, r.score) for r in second.rows] == \
           [(r.student, r.assignment, r.score) for r in first.rows]
    assert all(any("already graded" in n for n in r.notes) for r in second.rows)
    stamps = ray_class["stamps"]
    assert stamps and {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.slow
def test_the_summary_table_counts_every_outcome(ray_class):
    text = format_run(ray_class["first"])
    for assignment in RAY_CLASS:
        assert assignment in text
    total = next(line for line in text.splitlines() if line.startswith("all "))
    assert total.split()[1:4] == [str(len(ray_class["chosen"])), str(len(ray_class["chosen"])), "0"]
    assert "2 task(s) at a time, CPU tasks (Triton interpreter)" in text


# --- the dispatcher on trivial tasks: retry, time limit, reasons ------------------------------


def _run_dispatch(task, attempts=2, timeout_s=60.0):
    results, failures, retries = [], [], []
    dispatch(["job"], lambda job, attempt: task.remote(attempt),
             lambda job, result: results.append(result),
             lambda job, reasons: failures.append(reasons),
             lambda job, reason: retries.append(reason),
             slots=lambda: 2, attempts=attempts, timeout_s=timeout_s, poll_s=0.2)
    return results, failures, retries


def test_the_longest_problems_are_started_first():
    jobs = [Job(assignment, student, []) for student in ("ann", "bob") for assignment in ASSIGNMENTS]
    order = longest_first(jobs)
    assert [job.assignment for job in order[::2]] == sorted(ASSIGNMENTS, key=course_order, reverse=True)
    # Within one problem, students keep the order intake met them in.
    assert [job.student for job in order] == ["ann", "bob"] * len(ASSIGNMENTS)


def test_a_task_that_fails_once_is_retried_and_its_result_kept(cluster):
    @ray.remote(max_retries=0)
    def flaky(attempt):
        if attempt == 1:
            raise RuntimeError("the node went away")
        return attempt

    results, failures, retries = _run_dispatch(flaky)
    assert results == [2] and not failures
    assert retries == ["RuntimeError: the node went away"]


def test_a_task_that_always_fails_is_recorded_with_its_reasons(cluster):
    @ray.remote(max_retries=0)
    def broken(attempt):
        raise ValueError(f"broken on attempt {attempt}")

    results, failures, retries = _run_dispatch(broken)
    assert not results and len(retries) == 1
    assert failures == [["ValueError: broken on attempt 1", "ValueError: broken on attempt 2"]]


def test_a_task_over_its_time_limit_is_stopped_and_retried(cluster):
    @ray.remote(max_retries=0)
    def endless(attempt):
        time.sleep(3600)

    start = time.monotonic()
    results, failures, retries = _run_dispatch(endless, timeout_s=3)
    assert not results and len(failures) == 1 and len(failures[0]) == 2
    assert all("did not finish within 3 s" in r for r in failures[0])
    assert time.monotonic() - start < 60


def test_a_worker_lost_mid_task_is_reported_as_such(cluster):
    @ray.remote(max_retries=0)
    def dies(attempt):
        os._exit(1)

    _, failures, _ = _run_dispatch(dies)
    assert len(failures[0]) == 2 and all("WorkerCrashedError" in r for r in failures[0]), failures


def test_everything_but_ray_grading_works_without_ray(tmp_path):
    """Ray is optional: the package, the sequential path and the CLI import without it, and
    --ray says how to install it."""
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import autograder.cli, autograder.grading.autograde, autograder.grading.demo, autograder.grading.ray_grading\n"
        f"autograder.cli.main(['grade', {str(tmp_path)!r}, '--ray'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode != 0 and "pip install -e '.[scale]'" in proc.stderr, proc.stderr[-2000:]
