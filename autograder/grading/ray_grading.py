"""Grading on Ray: one task per submission, anywhere in a Ray cluster (autograde.Grader).

The driver (autograde.grade) does the intake, makes the course's template and records every
result; this grader only runs each submission's grading (scratch.grade_in_scratch) as a Ray task:

  driver                                         task (any node; a GPU of its own if there are GPUs)
  ------                                         ----
  the template: the course's config, a copy of
  the gradebook without submissions, and each
  assignment's source and release notebooks  ->  writes them and the submission into a scratch
                                                 course folder, grades it there, and returns the
                                                 scratch gradebook's rows for this submission and
                                                 the autograded/ folder, then deletes the scratch
  records the result in the course            <- one result at a time, in the driver only

A task that fails (an exception, a worker or node lost, over its time limit) is retried once,
then recorded with its reason and no grade.

Ray is optional (pip install -e .[scale]): it is imported inside the functions that use it, so
this module imports without it.
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass

from ..problems import course_order
from .autograde import Job, Tally, Work
from .scratch import grade_in_scratch, submission_timeout_s

# Settings of the grading itself that must reach every worker, wherever it runs.
FORWARDED_ENV = ("COURSE_SUBMISSION_TIMEOUT_S", "COURSE_CELL_TIMEOUT_S", "COURSE_CASE_TIMEOUT_S",
                 "COURSE_JUDGE_CACHE")
VERIFY_TIMEOUT_S = 1800             # verify.verify's own limit on the clean re-run


def task_timeout_s() -> float:
    """How long one task may take before the driver gives up on it and retries it: nbgrader's
    own limit plus the clean re-run's plus room for the scratch course. Normally never reached,
    since nbgrader is stopped at its limit inside the task; this catches a task that hangs."""
    default = submission_timeout_s() + VERIFY_TIMEOUT_S + 600
    return float(os.environ.get("COURSE_TASK_TIMEOUT_S", default))


@dataclass
class RayGrader:
    """Each submission a Ray task (autograde.Grader).

    address: an existing cluster ("auto", "ray://host:10001", "host:6379"); none: a local one
    (num_cpus caps it), stopped again at the end. gpus_per_task: the GPU share of one task;
    default 1 where the cluster has GPUs (each task has its GPU to itself, so timings are fair),
    else 0 (the interpreter). A task is tried `attempts` times in all, each for at most
    `timeout_s` (default task_timeout_s()). trace_dir: where each attempt ran (host, PID, scratch).
    """
    address: str | None = None
    num_cpus: int | None = None
    gpus_per_task: float | None = None
    attempts: int = 2
    timeout_s: float | None = None
    trace_dir: str | None = None

    label = "grade on Ray"

    def grade(self, jobs: list[Job], work: Work, tally: Tally) -> None:
        import ray

        started_here = _connect(self.address, self.num_cpus)
        try:
            self._grade(jobs, work, tally)
        finally:
            if started_here:
                ray.shutdown()

    def _grade(self, jobs: list[Job], work: Work, tally: Tally) -> None:
        import ray

        gpus_per_task = self.gpus_per_task
        if gpus_per_task is None:
            gpus_per_task = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        if not gpus_per_task:
            env["TRITON_INTERPRET"] = "1"  # set before the worker exists, so before any triton import
        remote = ray.remote(grade_in_scratch).options(
            num_cpus=1, num_gpus=gpus_per_task, max_retries=0, runtime_env={"env_vars": env})
        common_ref = ray.put(work.common)
        template_refs = {a: ray.put(files) for a, files in work.templates.items()}

        def launch(job: Job, attempt: int):
            return remote.remote(common_ref, template_refs[job.assignment], work.submission(job), job.assignment,
                                 job.student, attempt, self.trace_dir, work.sandboxed, gpus_per_task)

        share = f"{gpus_per_task:g} GPU per task" if gpus_per_task else "CPU tasks (Triton interpreter)"
        slots = _slots(gpus_per_task)
        tally.running(slots, f"{slots} task(s) at a time, {share}", gpus_per_task)
        dispatch(longest_first(jobs), launch, tally.graded, tally.failed, tally.retried,
                 slots=lambda: _slots(gpus_per_task), attempts=self.attempts,
                 timeout_s=self.timeout_s or task_timeout_s())


def longest_first(jobs: list[Job]) -> list[Job]:
    """The order tasks are started in: later problems first (students in intake order within one).

    Later problems take longest to grade (on an H200, problem 7's median task took 69 s, problem
    6's 53 s, problems 1-5's 15-32 s): started last, they left a tail in which most slots stood
    idle. The order of the gradebook and of the exports does not depend on it (students are
    enrolled before any task starts, and results are read back per assignment).
    """
    return sorted(jobs, key=lambda job: course_order(job.assignment), reverse=True)


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

    pending: deque[tuple] = deque((job, 1, []) for job in jobs)
    running: dict = {}  # ref -> (job, attempt, reasons, started)
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
