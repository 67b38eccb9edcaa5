"""Decide the points of a submission outside every process that ran its code.

Inside the notebook, student code shares a process with the test cells: it can redefine
`flash_attention_forward` in a cell of its own, patch `assert_cases` or `torch.isclose`, or print
whatever a test would print. So after nbgrader has run the notebook (which gives the student the
test cells' output as feedback), the graded tests are decided again by the judge (judge.py): a
fresh process that runs the test cells of the source notebook, hidden tests included, against a
candidate process in the sandbox (candidate.py) holding only
  - the locked cells as the course released them (setup, imports, kernel and wrapper), and
  - the student's answer cell, which must pass the answer policy (answer_policy.py: for the
    kernel problems only `@triton.jit` functions written in an allowlisted part of
    triton.language; for the PyTorch problems plain functions on tensors).
The judge's points are the grade: each graded test whose notebook score differs is set to the
judge's (nbgrader's manual score, which feedback and export use), and the reason goes into the
grade report.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..notebook_code import cell_by_id, grade_id, read, strip_markers
from . import answer_policy
from .judge_server import JudgeProcess
from .reference_cache import grader_digest


def answer_cell_violations(source: str, policy: str = "triton") -> list[str]:
    """Why this answer cell cannot be graded, one line each (empty when it is fine)."""
    return answer_policy.describe(answer_policy.violations(source, policy))


@dataclass
class Verification:
    violations: list = field(default_factory=list)
    results: dict = field(default_factory=dict)   # test grade_id -> (passed, message)
    scores: dict = field(default_factory=dict)    # test grade_id -> the value a partial-credit cell gave
    error: str = ""
    log: str = ""                                  # what the judge's checks printed
    grader_error: str = ""                         # the grader could not judge: no grade, say why
    meanwhile: object = None                       # what verify's `meanwhile` returned
    verdicts: list = field(default_factory=list)   # the judge's verdict per test, as it wrote them


def graded_test_cells(source_nb) -> list[tuple[str | None, str]]:
    return [(grade_id(c), strip_markers(c.source)) for c in source_nb.cells
            if c.cell_type == "code" and c.get("metadata", {}).get("nbgrader", {}).get("grade")]


def judge_spec(answer: str, assignment: str, source_path: Path, release_path: Path, kernel_cells,
               student_cell: str, sandboxed: bool = True) -> dict:
    """What the judge needs: the candidate's module (the released locked cells around `answer`),
    the graded tests, and the reference kernel when the problem gives performance points."""
    from .. import problems
    from ..kernel_module import kernel_source

    release, source = read(release_path), read(source_path)
    problem = replace(problems.get_spec(assignment), kernel_cells=tuple(kernel_cells), student_cell=student_cell)
    spec = {"assignment": assignment, "kernel_function": problem.kernel_function, "sandboxed": sandboxed,
            "module": kernel_source(problem, release, answer=answer), "tests": graded_test_cells(source)}
    if problem.performance_points:
        spec["reference_module"] = kernel_source(problem, source)
    return spec


def verify(submission: Path, source_path: Path, release_path: Path, kernel_cells, student_cell: str,
           timeout_s: float = 1800, policy: str = "triton", assignment: str = "",
           sandboxed: bool = True, meanwhile=None) -> Verification:
    """The judge's verdict on every graded test of `source_path` for the answer cell of `submission`.

    `meanwhile`: a function to run while the judge works (the notebook's own run under nbgrader:
    the two are independent, so on a machine with cores to spare grading takes the longer of
    the two, not their sum). The judge times kernels only once it has returned, so a notebook
    never shares the device with a timing. Its result is returned as `outcome.meanwhile`.
    """
    try:
        answer = cell_by_id(read(submission), student_cell).source
        outcome = Verification(violations=answer_cell_violations(answer, policy))
    except KeyError:
        outcome = Verification(violations=[f"the answer cell ({student_cell}) is missing from the notebook"])
    if outcome.violations:
        outcome.meanwhile = meanwhile() if meanwhile else None
        return outcome
    assignment = assignment or Path(source_path).parent.name
    spec = judge_spec(answer, assignment, source_path, release_path, kernel_cells, student_cell, sandboxed)
    cached = judge_cache_path(spec)
    if cached is not None and cached.exists():
        outcome.meanwhile = meanwhile() if meanwhile else None
        _read_verdicts(outcome, json.loads(cached.read_text()))
        return outcome
    with tempfile.TemporaryDirectory(prefix="judge-") as tmp:
        spec_path, result_path, gate = Path(tmp) / "spec.json", Path(tmp) / "verdicts.json", Path(tmp) / "timing-gate"
        spec_path.write_text(json.dumps(spec))
        log_path = Path(tmp) / "judge.log"
        # A fresh process, forked from a judge server that has already imported torch (judge_server.py).
        judge = JudgeProcess(spec_path, result_path, log_path, dict(os.environ, COURSE_TIMING_GATE=str(gate)))
        try:
            outcome.meanwhile = meanwhile() if meanwhile else None
        except BaseException:
            judge.kill()
            raise
        finally:
            gate.touch()
        if not judge.wait(timeout_s):
            judge.kill()
            outcome.error = f"the judge did not finish within {timeout_s:g} s"
            return outcome
        outcome.log = log_path.read_text(errors="replace")[-20000:] if log_path.exists() else ""
        if not result_path.exists():
            last = (outcome.log.strip().splitlines() or ["no output"])[-1]
            outcome.grader_error = "the judge failed: " + last[:200]
            return outcome
        result = json.loads(result_path.read_text())
        _read_verdicts(outcome, result)
        if cached is not None and not outcome.grader_error:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(result))
            partial.replace(cached)
    return outcome


def _read_verdicts(outcome: Verification, result: dict) -> None:
    outcome.grader_error = result["error"]
    outcome.verdicts = result["verdicts"]
    for item in result["verdicts"]:
        outcome.results[item["test"]] = (item["passed"], item["message"])
        if item.get("score") is not None:
            outcome.scores[item["test"]] = item["score"]


def judge_cache_path(spec: dict) -> Path | None:
    """Where the judge's verdicts for exactly this spec are kept, under COURSE_JUDGE_CACHE (the
    grading driver sets it to the course's build/judge-cache), or None without one. The key is
    everything a verdict depends on: the module (so the answer cell), the tests, the reference,
    where kernels run, the versions and the grader's own code. Identical answer cells get the
    same verdict, performance points included, and are judged once."""
    folder = os.environ.get("COURSE_JUDGE_CACHE")
    if not folder:
        return None
    import torch
    import triton

    from .. import __file__ as package_init

    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    digest.update(f"{os.environ.get('TRITON_INTERPRET')}|{where}|{torch.__version__}|{triton.__version__}|"
                  f"{os.environ.get('COURSE_CASE_TIMEOUT_S')}".encode())
    digest.update(grader_digest(Path(package_init).parent).encode())
    return Path(folder) / f"{digest.hexdigest()}.json"


def judge_points(grade_name: str, max_score: float, outcome: Verification) -> tuple[float, str]:
    """(points, why) the judge gives one graded test."""
    if outcome.violations:
        return 0.0, "the answer cell was rejected"
    passed, message = outcome.results.get(grade_name, (False, outcome.error or "the judge did not run it"))
    if not passed:
        return 0.0, message
    return min(max_score, outcome.scores.get(grade_name, max_score)), ""


def apply_to_gradebook(db_url: str, assignment: str, notebook: str, student: str, outcome: Verification) -> None:
    """Make the judge's points the grade: every graded test whose notebook score differs gets the
    judge's as nbgrader's manual score (the notebook ran no test: scratch._tests_stand_aside, so
    each cell that ran to its end has its full points there)."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(db_url) as gb:
        try:
            sub = gb.find_submission_notebook(notebook, assignment, student)
        except MissingEntry:
            return
        for grade in sub.grades:
            if not grade.max_score:
                continue
            points, _ = judge_points(grade.name, grade.max_score, outcome)
            grade.manual_score = None if points == (grade.auto_score or 0) else points  # nbgrader's override
        gb.db.commit()
