"""Grade a whole class on Ray: one task per (student, assignment), one writer of the gradebook.

The sequential path (pipeline.grade) autogrades one submission after another in the course
folder. Here the same per-submission work (pipeline.autograde_submission: nbgrader autograde
with its time limit, the clean re-run, and whatever else grading one notebook will involve)
runs as a Ray task, anywhere in a Ray cluster:

  driver                                         task (any node; a GPU of its own if there are GPUs)
  ------                                         ----
  intake of each submission (pipeline.triage)
  a template: the course's config, a copy of
  the gradebook without submissions, and each
  assignment's source and release notebooks  ->  writes them and the submission into a scratch
                                                 course folder, grades it there, and returns the
                                                 scratch gradebook's rows for this submission and
                                                 the autograded/ folder, then deletes the scratch
  records the rows into the course's gradebook
  (nbgrader.api.Gradebook), writes autograded/,
  then the done marker                        <- one result at a time, in this process only
  feedback, export and the report (pipeline.finish), exactly as the sequential path

nbgrader's gradebook is one SQLite file, so no task ever opens it: a task has a private copy,
and only the driver writes the course's. A task that fails (an exception, a worker or node
lost, over its time limit) is retried once, then recorded with its reason and no grade; a
submission counts as graded only once the driver has recorded it, so running the command
again grades what is left and nothing twice.

Ray is optional (pip install -e .[scale]): it is imported only here, and only when called.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from .. import problems
from ..notebook_code import read
from . import pipeline
from .scratch import (GRADE_FIELDS, SCRATCH_DIR, SubmissionResult, _read_tree, course_template,  # noqa: F401
                      grade_in_scratch, read_submission, record_result)

# Settings of the grading itself that must reach every worker, wherever it runs.
FORWARDED_ENV = ("COURSE_SUBMISSION_TIMEOUT_S", "COURSE_CELL_TIMEOUT_S", "COURSE_CASE_TIMEOUT_S",
                 "COURSE_JUDGE_CACHE")
VERIFY_TIMEOUT_S = 1800             # verify.verify's own limit on the clean re-run

def task_timeout_s() -> float:
    """How long one task may take before the driver gives up on it and retries it: nbgrader's
    own limit plus the clean re-run's plus room for the scratch course. Normally never reached,
    since nbgrader is stopped at its limit inside the task; this catches a task that hangs."""
    default = pipeline.submission_timeout_s() + VERIFY_TIMEOUT_S + 600
    return float(os.environ.get("COURSE_TASK_TIMEOUT_S", default))


# ---------------------------------------------------------------------------------------------
# The driver: connect, dispatch, retry, record, report.


@dataclass
class Job:
    assignment: str
    student: str
    notes: list                     # from intake, before any grading


@dataclass
class ClassRun:
    rows: list                                              # SubmissionGrade, per assignment in order
    counts: dict = field(default_factory=dict)              # assignment -> Counter of outcomes
    failures: list = field(default_factory=list)            # (assignment, student, [reasons])
    task_seconds: list = field(default_factory=list)        # per graded task, on its worker
    hosts: Counter = field(default_factory=Counter)         # node -> tasks graded there
    wall_s: float = 0.0
    slots: int = 0                                          # tasks the cluster runs at once
    gpus_per_task: float = 0.0


def start_local_ray(num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """A Ray instance on this machine."""
    import ray

    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)


def _connect(address: str | None, num_cpus: int | None) -> bool:
    """Join the cluster at `address`, or start a local one. True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        start_local_ray(num_cpus)
    return True


def _slots(gpus_per_task: float) -> int:
    """How many tasks the cluster runs at once now (it may grow or shrink while we run)."""
    import ray

    res = ray.cluster_resources()
    n = res.get("GPU", 0) / gpus_per_task if gpus_per_task else res.get("CPU", 1)
    return max(1, int(n + 1e-9))


def _reason(exc: BaseException) -> str:
    """One line on why a task failed: the exception (the task's own, not Ray's wrapper) and
    the first line of its message."""
    import ray.exceptions as rex

    if isinstance(exc, rex.RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}".rstrip(": ")


def grade_class(course_root: Path, assignments=None, *, address: str | None = None,
                num_cpus: int | None = None, gpus_per_task: float | None = None, regrade: bool = False,
                progress: bool = True, attempts: int = 2, timeout_s: float | None = None,
                trace_dir: str | None = None, sandboxed: bool = True) -> ClassRun:
    """Grade every submission of `assignments` (default: each one with submissions) on Ray.

    address: an existing cluster ("auto", "ray://host:10001", "host:6379"); none: a local one
    (num_cpus caps it). gpus_per_task: the GPU share of one task; default 1 where the cluster
    has GPUs (each task has its GPU to itself, so timings are fair), else 0 (the interpreter).
    """
    course_root = Path(course_root).resolve()
    pipeline.use_judge_cache(course_root)  # workers on this machine share it; elsewhere it is not there
    chosen = list(assignments or [a for a in problems.ASSIGNMENTS if pipeline.submitted_students(course_root, a)])
    if not chosen:
        raise FileNotFoundError(f"no submissions under {course_root / 'submitted'}/<student>/<assignment>/")
    wall = time.monotonic()
    run = ClassRun([])

    # Intake, in the order the sequential path takes (assignment, then student): the notes are
    # the same, and students enter the gradebook in the same order, so the exports match.
    outcome, jobs, students_of = {}, [], {}
    for assignment in chosen:
        students = pipeline.submitted_students(course_root, assignment)
        students_of[assignment] = students
        release_nb = read(course_root / "notebooks" / assignment / f"{pipeline.ASSIGNMENTS[assignment]}.ipynb")
        counts = run.counts.setdefault(assignment, Counter())
        for student in students:
            notes, problem, needs = pipeline.triage(course_root, assignment, student, release_nb, regrade)
            outcome[(assignment, student)] = (notes, problem)
            if needs:
                jobs.append(Job(assignment, student, notes))
            else:
                counts["kept" if not problem else "not gradable"] += 1

    if jobs:  # nothing left to grade: no cluster needed
        import ray

        started_here = _connect(address, num_cpus)
        try:
            _grade_jobs(run, jobs, outcome, course_root, gpus_per_task, progress, attempts,
                        timeout_s or task_timeout_s(), trace_dir, sandboxed)
        finally:
            if started_here:
                ray.shutdown()

    for assignment in chosen:
        students = students_of[assignment]
        if students:
            run.rows += pipeline.finish(course_root, assignment, students,
                                        {s: outcome[(assignment, s)] for s in students},
                                        feedback=_feedback_needed(course_root, assignment, students, run))
    run.wall_s = time.monotonic() - wall
    return run


def _feedback_needed(course_root: Path, assignment: str, students, run: ClassRun) -> bool:
    """Regenerate feedback when this run recorded a grade, or some graded submission has none."""
    if run.counts[assignment]["graded"]:
        return True
    notebook = pipeline.ASSIGNMENTS[assignment]
    return any(pipeline.is_graded(course_root, assignment, s)
               and not (course_root / "feedback" / s / assignment / f"{notebook}.html").exists()
               for s in students)


def _grade_jobs(run: ClassRun, jobs, outcome, course_root: Path, gpus_per_task, progress, attempts,
                timeout_s, trace_dir, sandboxed=True) -> None:
    import ray
    from tqdm.auto import tqdm

    if gpus_per_task is None:
        gpus_per_task = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
    run.gpus_per_task = gpus_per_task
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    if not gpus_per_task:
        env["TRITON_INTERPRET"] = "1"  # set before the worker exists, so before any triton import
    remote = ray.remote(grade_in_scratch).options(
        num_cpus=1, num_gpus=gpus_per_task, max_retries=0, runtime_env={"env_vars": env})

    _enrol([job.student for job in jobs], course_root)
    common, per_assignment = course_template(course_root, {job.assignment for job in jobs})
    common_ref = ray.put(common)
    template_refs = {a: ray.put(files) for a, files in per_assignment.items()}

    def launch(job: Job, attempt: int):
        submission = _read_tree(course_root / "submitted" / job.student / job.assignment)
        return remote.remote(common_ref, template_refs[job.assignment], submission, job.assignment,
                             job.student, attempt, trace_dir, sandboxed)

    bar = tqdm(total=len(jobs), desc="grade on Ray", unit="submission", disable=not progress)
    tally = Counter()

    def show():
        bar.set_postfix_str(f"done {tally['graded']}, failed {tally['failed']}, "
                            f"left {len(jobs) - tally['graded'] - tally['failed']}, retried {tally['retried']}")

    def on_result(job: Job, result: SubmissionResult):
        record_result(course_root, result)
        outcome[(job.assignment, job.student)] = (job.notes + result.notes, result.problem)
        run.counts[job.assignment]["graded"] += 1
        run.task_seconds.append(result.seconds)
        run.hosts[result.host] += 1
        tally["graded"] += 1
        bar.update(1)
        show()

    def on_failure(job: Job, reasons: list):
        outcome[(job.assignment, job.student)] = (
            job.notes + [f"attempt {i + 1}: {r}" for i, r in enumerate(reasons)],
            f"grading task failed {len(reasons)} times, not graded (last: {reasons[-1]})")
        run.counts[job.assignment]["failed"] += 1
        run.failures.append((job.assignment, job.student, reasons))
        tally["failed"] += 1
        bar.update(1)
        show()

    def on_retry(job: Job, reason: str):
        run.counts[job.assignment]["retried"] += 1
        tally["retried"] += 1
        show()

    show()
    run.slots = _slots(gpus_per_task)
    try:
        dispatch(jobs, launch, on_result, on_failure, on_retry, slots=lambda: _slots(gpus_per_task),
                 attempts=attempts, timeout_s=timeout_s)
    finally:
        bar.close()


def _enrol(students, course_root: Path) -> None:
    """Add students to the gradebook in the order nbgrader autograde would have met them."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course_root / 'build' / 'gradebook.db'}") as gb:
        for student in dict.fromkeys(students):
            gb.update_or_create_student(student)


def dispatch(jobs, launch, on_result, on_failure, on_retry, *, slots, attempts: int = 2,
             timeout_s: float, poll_s: float = 1.0) -> None:
    """Run `launch(job, attempt)` (a Ray ObjectRef) for every job, at most `slots()` at a time.

    A task that raises, loses its worker or node, or runs past `timeout_s` (it is then
    cancelled, which kills its worker) is launched again, up to `attempts` in all; after the
    last, `on_failure(job, reasons)`. Results go to `on_result(job, result)` in this thread,
    one at a time, which is what lets the caller write a single-writer gradebook.
    Tasks are held back rather than queued in Ray so that each one's clock starts when it runs.
    """
    import ray

    pending = deque((job, 1, []) for job in jobs)
    running = {}  # ref -> (job, attempt, reasons, started)
    capacity, checked = slots(), time.monotonic()

    def failed(job, attempt, reasons, reason):
        reasons = reasons + [reason]
        if attempt < attempts:
            on_retry(job, reason)
            pending.appendleft((job, attempt + 1, reasons))  # retried next, not after everyone
        else:
            on_failure(job, reasons)

    while pending or running:
        if time.monotonic() - checked > 10:
            capacity, checked = slots(), time.monotonic()
        while pending and len(running) < capacity:
            job, attempt, reasons = pending.popleft()
            running[launch(job, attempt)] = (job, attempt, reasons, time.monotonic())
        ready, _ = ray.wait(list(running), num_returns=1, timeout=poll_s)
        for ref in ready:
            job, attempt, reasons, _ = running.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # the task's own exception, or Ray's word that it was lost
                failed(job, attempt, reasons, _reason(exc))
            else:
                on_result(job, result)
        now = time.monotonic()
        for ref, (job, attempt, reasons, started) in list(running.items()):
            if now - started > timeout_s:
                ray.cancel(ref, force=True)
                del running[ref]
                failed(job, attempt, reasons, f"did not finish within {timeout_s:g} s; its worker was stopped")


def format_run(run: ClassRun) -> str:
    """The final summary: outcomes per assignment, throughput, and every failure with its reasons."""
    kinds = ("graded", "kept", "not gradable", "failed", "retried")
    width = max([len(a) for a in run.counts] + [10])
    lines = [f"{'assignment':<{width}}  {'submissions':>11}  " + "  ".join(f"{k:>12}" for k in kinds),
             "-" * (width + 15 + 14 * len(kinds))]
    total = Counter()
    for assignment, counts in run.counts.items():
        n = sum(counts[k] for k in kinds[:4])
        total.update(counts)
        total["submissions"] += n
        lines.append(f"{assignment:<{width}}  {n:>11}  " + "  ".join(f"{counts[k]:>12}" for k in kinds))
    lines.append(f"{'all':<{width}}  {total['submissions']:>11}  " + "  ".join(f"{total[k]:>12}" for k in kinds))
    where = ", ".join(f"{h}: {n}" for h, n in run.hosts.most_common())
    share = f"{run.gpus_per_task:g} GPU per task" if run.gpus_per_task else "CPU tasks (Triton interpreter)"
    lines.append("")
    if run.slots:
        lines.append(f"wall time {run.wall_s:.1f} s; {run.slots} task(s) at a time, {share}"
                     + (f"; graded on {where}" if where else ""))
    else:
        lines.append(f"wall time {run.wall_s:.1f} s; nothing left to grade, so no Ray task was started")
    if run.task_seconds:
        secs = sorted(run.task_seconds)
        lines.append(f"per task: median {secs[len(secs) // 2]:.1f} s, longest {secs[-1]:.1f} s, "
                     f"sum {sum(secs):.1f} s")
    for assignment, student, reasons in run.failures:
        lines.append(f"FAILED {student} / {assignment}: " + " | ".join(reasons))
    return "\n".join(lines)
