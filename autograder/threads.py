"""Each grading task's share of the machine's cores, in every process it starts.

Several grading tasks at once (Ray, or a judge beside its notebook) each start torch, and torch
starts one thread per core: on 16 cores, six tasks ask for 96+ threads, and the CPU-side work of
a wrong submission (the float64 re-enactments of its likely causes) slows down tenfold. So a
task caps its threads at its share, cores / tasks at once (at least 1), and passes the cap on:

  - `task_share(tasks_at_once)` (scratch.grade_in_scratch, around one submission's grading; of the
    share this process was given, if it was given one): sets
    COURSE_THREADS, OMP_NUM_THREADS and MKL_NUM_THREADS for every process the task starts
    (nbgrader and the notebook kernel in the sandbox, the judge, its sandboxed candidates) and
    torch's threads in this process; restores them afterwards;
  - `apply()` (first thing in the judge and in a candidate): torch.set_num_threads(COURSE_THREADS).
    OpenMP and MKL read their variables when they start, torch reads OMP_NUM_THREADS, so a notebook
    kernel, which runs no code of the grader's before the student's, is capped by the variables.
"""
from __future__ import annotations

import contextlib
import os

ENV = "COURSE_THREADS"
VARIABLES = (ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def share(tasks_at_once: int, available: int | None = None) -> int:
    """Threads for one of `tasks_at_once` tasks on `available` cores (default: the share this
    process was given, COURSE_THREADS, else this machine's cores): a process given a share splits
    that share among its tasks, not the machine."""
    return max(1, (available or cap() or cores()) // max(1, int(tasks_at_once)))


def cap() -> int | None:
    """The cap this process was given (COURSE_THREADS), or None."""
    try:
        value = int(os.environ.get(ENV, ""))
    except ValueError:
        return None
    return value if value >= 1 else None


def apply() -> int | None:
    """Cap torch's threads in this process at COURSE_THREADS; returns the cap (None: none given)."""
    n = cap()
    if n is not None:
        import torch

        torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def task_share(tasks_at_once: int):
    """Inside: this task's processes and the ones it starts use `share(tasks_at_once)` threads."""
    n = share(tasks_at_once)
    saved = {name: os.environ.get(name) for name in VARIABLES}
    import torch

    torch_threads = torch.get_num_threads()
    os.environ.update({name: str(n) for name in VARIABLES})
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        torch.set_num_threads(torch_threads)


def ray_tasks_at_once(gpus_per_task: float) -> int:
    """How many grading tasks this Ray node runs at once: one per CPU (a task takes one), or
    per GPU share where tasks take GPUs. 1 outside a Ray worker."""
    try:
        import ray

        if not ray.is_initialized():
            return 1
        node = ray.get_runtime_context().get_node_id()
        resources: dict = next((n.get("Resources", {}) for n in ray.nodes() if n.get("NodeID") == node), {})
    except Exception:  # Ray missing or not answering: act as the only task
        return 1
    if gpus_per_task:
        return max(1, int(resources.get("GPU", 0) / gpus_per_task + 1e-9))
    return max(1, int(resources.get("CPU", 1)))
