"""Grading a class end to end through real nbgrader: one submission after another, and on Ray.

The sequential run grades a class of the bundled samples and every grade, cause, export and
feedback file is checked. A local two-CPU Ray cluster grades a subset of the same submissions in
parallel: its grades, nbgrader's export and the grade report must equal the sequential run's; a
worker killed in the middle of a submission must cost nothing (its task is retried and graded); a
second run must grade nothing twice. Lighter tests check the dispatcher's retry and time limit on
trivial tasks, and that everything else works without Ray installed. (One file, so that one test
worker grades the class once for both.)
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

from autograder.grading.autograde import format_run, grade
from autograder.grading.demo import run_demo, stage_demo
from autograder.grading.export import summary, write_rows
from autograder.grading.samples import SAMPLES, expected_score
from autograder.grading.scratch import is_graded
from autograder.problems import ASSIGNMENTS, total_points

try:
    import ray

    from autograder.grading.ray_grading import RayGrader, dispatch, start_local_ray
except ImportError:  # Ray is an optional extra: the sequential tests run without it
    ray = None

DEMO_CLASS_SIZE = 3 * len(ASSIGNMENTS)  # every problem's correct, untouched and first named mistake
# Every problem's first sample (its correct answer): a subset of the sequential demo's class, so the
# two paths are compared on the same submissions.
CLASS_SIZE = len(ASSIGNMENTS)


@pytest.fixture(scope="module")
def sequential_demo(tmp_path_factory, repo_root):
    """A class graded once, one after another, through nbgrader (grading.demo.run_demo): (course
    folder, {(student, assignment): SubmissionGrade}, expected points). The Ray tests below compare
    their grading of the same submissions with this run."""
    course = tmp_path_factory.mktemp("sequential-demo") / "course"
    # A class of 18 taken in turn from every problem's samples (correct, untouched and the first
    # mistakes of each): the whole bundled set is `bash course.sh demo`, too long for CI.
    run, expected = run_demo(repo_root, course, progress=False, class_size=DEMO_CLASS_SIZE)
    return course, {(r.student, r.assignment): r for r in run.rows}, expected


@pytest.fixture(scope="module")
def demo(sequential_demo):
    return sequential_demo


def _sample(student, assignment):
    """The bundled sample a demo submission was made from (copies are named '<sample>-2', ...)."""
    by_name = {s.name: s for s in SAMPLES[assignment]}
    return by_name.get(student) or by_name[student.rsplit("-", 1)[0]]


@pytest.mark.slow
def test_the_demo_class_covers_every_problem_with_right_and_wrong_submissions(demo):
    _, rows, _ = demo
    for assignment in ASSIGNMENTS:
        graded = {_sample(s, a).name for s, a in rows if a == assignment}
        assert {"correct", "untouched"} <= graded, assignment
        assert any(_sample(s, a).expected_cause not in ("", "not_implemented") for s, a in rows if a == assignment)


@pytest.mark.slow
def test_each_submission_gets_the_score_it_deserves_and_its_cause(demo):
    _, rows, _ = demo
    for (student, assignment), row in rows.items():
        sample = _sample(student, assignment)
        assert row.score == expected_score(sample, assignment), summary([row])
        assert row.max_score == total_points(assignment)
        if sample.expected_cause:
            assert sample.expected_cause in row.causes, summary([row])
        else:
            assert not row.causes and not row.failed_tests, summary([row])


@pytest.mark.slow
def test_outputs_of_the_pipeline_exist_and_agree(demo):
    course, rows, _ = demo
    with open(course / "grades.csv") as f:
        exported = {(r["student_id"], r["assignment"]): float(r["score"]) for r in csv.DictReader(f)}
    assert {key: exported[key] for key in rows} == {key: row.score for key, row in rows.items()}
    assert (course / "grades.png").stat().st_size > 10_000
    feedback = list((course / "feedback").glob("*/problem3/problem3.html"))
    assert len(feedback) == sum(a == "problem3" for _, a in rows)
    untouched = (course / "feedback" / "untouched" / "problem3" / "problem3.html").read_text()
    assert "not implemented yet" in untouched


@pytest.mark.slow
def test_hidden_tests_ran_in_the_judge_and_never_in_the_students_kernel(demo):
    import json

    course, _, _ = demo
    graded = (course / "autograded" / "correct" / "problem3" / "problem3.ipynb").read_text()
    released = (course / "notebooks" / "problem3" / "problem3.ipynb").read_text()
    feedback = (course / "feedback" / "correct" / "problem3" / "problem3.html").read_text()
    # The hidden cases are in the source only: not released, not sent to the student's kernel, not in the feedback.
    assert "seed=14" not in released and "seed=14" not in graded and "seed=14" not in feedback
    assert "the grader runs them outside this notebook" in graded
    verdicts = json.loads((course / "autograded" / "correct" / "problem3" / "judge-verdicts.json").read_text())
    judged = {v["test"]: v["passed"] for v in verdicts["verdicts"]}
    assert judged["test_hidden_lengths"] is True and all(judged.values())
    assert "Benchmark skipped while grading" in graded


# --- the same class on Ray ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    if ray is None:
        pytest.skip("Ray is not installed (pip install -e '.[scale]')")
    if ray.is_initialized():
        ray.shutdown()
    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def _original(student: str, known) -> str:
    """A sample handed in again as '<sample>-2' is graded like '<sample>'."""
    base, _, suffix = student.rpartition("-")
    return base if suffix.isdigit() and base in known else student


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
    staged = stage_demo(repo_root, course, class_size=CLASS_SIZE)
    chosen = sorted(staged, key=lambda key: (ASSIGNMENTS.index(key[1]), key[0]))
    victim = chosen[0]  # the first task to start
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
def test_a_class_of_every_problem_is_graded_in_parallel(ray_class):
    first = ray_class["first"]
    assert len(first.rows) == len(ray_class["chosen"]) >= CLASS_SIZE
    assert {a for _, a in ray_class["chosen"]} == set(ASSIGNMENTS)
    assert first.slots == 2 and not first.failures
    assert sum(c["graded"] for c in first.counts.values()) == len(ray_class["chosen"])
    # Two at a time: some attempts overlapped in time on two different workers.
    pids = {json.loads(p.read_text())["pid"] for p in ray_class["trace"].glob("*.json")}
    assert len(pids) >= 2


@pytest.mark.slow
def test_grades_equal_the_sequential_run(ray_class, sequential_demo):
    _, sequential, _ = sequential_demo
    names = {s for s, _ in sequential}
    for row in ray_class["first"].rows:
        seq = sequential[(_original(row.student, names), row.assignment)]
        assert (row.score, row.max_score, row.failed_tests, row.causes, row.problem, row.notes) == \
               (seq.score, seq.max_score, seq.failed_tests, seq.causes, seq.problem, seq.notes), row.student
        assert row.score == ray_class["staged"][(row.student, row.assignment)]


@pytest.mark.slow
def test_the_csv_files_equal_the_sequential_ones_for_the_same_submissions(ray_class, sequential_demo):
    seq_course, sequential, _ = sequential_demo
    names = {s for s, _ in sequential}

    def read(text):
        rows = list(csv.reader(text.splitlines()))
        return rows[0], rows[1:]

    # nbgrader's export has a line per (assignment, student in the gradebook): each line of the
    # Ray course is the sequential course's line for that pair, in the same order.
    ray_header, ray_rows = read(ray_class["exported"])
    seq_header, seq_rows = read((seq_course / "grades.csv").read_text())
    ray_rows = [r for r in ray_rows if r[3] in names]  # copies '<sample>-2' exist only here
    keys = {(r[0], r[3]) for r in ray_rows}
    assert ray_header == seq_header and len(keys) >= CLASS_SIZE
    assert ray_rows == [r for r in seq_rows if (r[0], r[3]) in keys]
    # The grade report: a line per submission, the same as the sequential line of that
    # submission (a copy's line is its original's, but for the name), in the same order.
    ray_header, ray_rows = read((ray_class["course"] / "grade_report.csv").read_text())
    seq_header, seq_rows = read((seq_course / "grade_report.csv").read_text())
    assert ray_header == seq_header and len(ray_rows) == len(ray_class["chosen"])
    seq_line = {(r[0], r[1]): r for r in seq_rows}
    for row in ray_rows:
        assert [_original(row[0], names)] + row[1:] == seq_line[(_original(row[0], names), row[1])]
    originals = [(r[0], r[1]) for r in ray_rows if r[0] in names]
    assert originals == [(r[0], r[1]) for r in seq_rows if (r[0], r[1]) in set(originals)]


@pytest.mark.slow
def test_a_worker_killed_mid_task_loses_nothing(ray_class, sequential_demo):
    import psutil

    _, sequential, _ = sequential_demo
    killed, (student, assignment) = ray_class["killer"].killed, ray_class["victim"]
    assert killed is not None, "the victim's first attempt never started"
    retry = json.loads((ray_class["trace"] / f"{assignment}--{student}--2.json").read_text())
    assert retry["pid"] != killed["pid"]
    first = ray_class["first"]
    assert first.counts[assignment]["retried"] == 1 and not first.failures
    row = next(r for r in first.rows if (r.student, r.assignment) == (student, assignment))
    assert row.score == sequential[(student, assignment)].score and not row.problem
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
    for assignment in ASSIGNMENTS:
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
