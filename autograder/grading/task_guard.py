"""Clean up after a grading task whose worker died: `python -m autograder.grading.task_guard PID SCRATCH`.

A Ray task grades in a scratch course, through nbgrader, which runs the notebook's kernel; both
run in process sessions of their own (so that a time limit can kill the whole tree). If the
worker itself is killed (SIGKILL, the OOM killer, `ray.cancel(force=True)` at the task's time
limit), nothing of that runs its cleanup: nbgrader and the kernel would go on, holding CPU, GPU
memory, and the scratch folder. This guard, started by the task in a session of its own, watches
the worker; once it is gone, it kills every process the worker had started and every process
working inside the scratch folder, then deletes the folder. When the task ends normally, the
task stops the guard.

(Ray's own option for this, RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper, makes
every child process's exit status read as 0, and grading reads nbgrader's exit status.)
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

POLL_S = 0.5


def _inside(proc, scratch: str) -> bool:
    try:
        return proc.cwd().startswith(scratch) or any(scratch in part for part in proc.cmdline())
    except Exception:  # gone, or not ours to look at
        return False


def guard(worker_pid: int, scratch: Path) -> None:
    import psutil

    me = os.getpid()
    try:
        worker = psutil.Process(worker_pid)
    except psutil.NoSuchProcess:
        worker = None
    seen = {}  # pid -> process, with its start time, so a reused PID is never killed
    while worker is not None and worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE:
        try:
            for child in worker.children(recursive=True):
                if child.pid != me:
                    seen[child.pid] = child
        except psutil.NoSuchProcess:
            break
        time.sleep(POLL_S)
    # The worker is gone: its descendants were reparented, so find them by what we saw and by
    # where they work.
    victims = [p for p in seen.values() if p.is_running()]
    victims += [p for p in psutil.process_iter() if p.pid != me and p.pid not in seen and _inside(p, str(scratch))]
    for proc in victims:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=10)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    guard(int(sys.argv[1]), Path(sys.argv[2]))
