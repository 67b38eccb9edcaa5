"""Run nbgrader's own command line on a course folder, one step at a time.

Each step is a separate process: a submission that crashes its kernel, or nbgrader itself,
cannot take the caller down with it.
"""
from __future__ import annotations

import os
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


def run_nbgrader(course_root: Path, *args: str, timeout_s: float | None = None) -> StepResult:
    """`nbgrader <args>` with the course folder as working directory and root."""
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course_root}"]
    # nbgrader runs helper programs (alembic) and kernels from this interpreter's environment,
    # which need not be on PATH when the venv was not activated.
    # COURSE_GRADING tells notebook cells that only matter to a learner (benchmarks) to stand aside.
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               COURSE_GRADING="1")
    try:
        proc = subprocess.run(cmd, cwd=course_root, capture_output=True, text=True, timeout=timeout_s, env=env)
        return StepResult(cmd, proc.returncode, proc.stdout + proc.stderr)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return StepResult(cmd, -1, out + f"\nnbgrader {args[0]} did not finish within {timeout_s:g} s")


def must(result: StepResult) -> StepResult:
    if not result.ok:
        tail = "\n".join(result.output.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(result.args[2:4])} failed (exit {result.returncode}):\n{tail}")
    return result
