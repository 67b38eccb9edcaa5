"""Run nbgrader's own command line on a course folder, one step at a time.

Each step is a separate process: a submission that crashes its kernel, or nbgrader itself,
cannot take the caller down with it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class StepResult:
    args: list
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_nbgrader(course_root: Path, *args: str, timeout_s: float | None = None, env: dict | None = None) -> StepResult:
    """`nbgrader <args>` with the course folder as working directory and root."""
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course_root}"]
    # nbgrader runs helper programs (alembic) and kernels from this interpreter's environment,
    # which need not be on PATH when the venv was not activated.
    # COURSE_GRADING tells notebook cells that only matter to a learner (benchmarks) to stand aside;
    # COURSE_FEEDBACK_RUN does the same for the self-check and the figures (feedback_run.py).
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               COURSE_GRADING="1", COURSE_FEEDBACK_RUN="1", **(env or {}))
    # A new process session, so that on a timeout the whole tree goes: nbgrader and the notebook
    # kernel it started, which may be stuck in a GPU kernel that never ends.
    proc = subprocess.Popen(cmd, cwd=course_root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return StepResult(cmd, proc.returncode, out)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        out, _ = proc.communicate()
        return StepResult(cmd, -1, (out or "") + f"\nnbgrader {args[0]} did not finish within {timeout_s:g} s; "
                                                  "it and the notebook's kernel were stopped")


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill nbgrader and every descendant. Jupyter starts kernels in sessions of their own,
    so a process-group kill alone would leave the kernel (and its GPU context) behind."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)


def must(result: StepResult) -> StepResult:
    if not result.ok:
        tail = "\n".join(result.output.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(result.args[2:4])} failed (exit {result.returncode}):\n{tail}")
    return result
