"""Re-run the graded tests where student code cannot reach them.

Inside the notebook, student code shares a process with the test cells: it can redefine
`flash_attention_forward` in a cell of its own, or patch `assert_cases`, `torch.isclose` or
the reference. So after nbgrader has graded a notebook, each graded test is run again in a
fresh interpreter that holds only
  - the locked cells as the course released them (setup, imports, kernel and wrapper), and
  - the student's answer cell, which must consist of `@triton.jit` functions and constants
    (no imports, no top-level statements, no access to torch, files or the interpreter),
with the test cells taken from the source notebook, hidden tests included. A test that passed
in the notebook but fails here is set to 0 in the gradebook (nbgrader's manual score), and the
reason goes into the grade report.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..notebook_code import cell_by_id, grade_id, read, strip_markers

FORBIDDEN_NAMES = {
    "torch", "np", "numpy", "os", "sys", "subprocess", "open", "exec", "eval", "compile", "globals", "locals",
    "vars", "getattr", "setattr", "delattr", "__import__", "__builtins__", "builtins", "autograder", "importlib",
    "F", "input", "breakpoint", "memoryview", "type", "object",
}
ALLOWED_DECORATORS = {"triton.jit", "jit"}


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return _dotted(node.func)
    return ""


def _is_constant(node) -> bool:
    """A literal, a signed literal, or tl.constexpr(literal)."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp):
        return _is_constant(node.operand)
    if isinstance(node, ast.Call) and _dotted(node.func) == "tl.constexpr":
        return all(_is_constant(a) for a in node.args) and not node.keywords
    return False


# The PyTorch exercises (problems 1 and 2) write plain functions on tensors: torch and math
# are allowed there, but still no imports, no other modules and no patching of attributes.
TORCH_POLICY_ALLOWED = {"torch", "F", "math"}


def answer_cell_violations(source: str, policy: str = "triton") -> list[str]:
    """Why this answer cell cannot be graded (empty when it is fine).

    policy "triton": only @triton.jit functions and constants (the kernel problems);
    policy "torch": plain functions and constants that may use torch and math.
    """
    if policy not in ("triton", "torch"):
        raise ValueError(f"unknown answer policy {policy!r}")
    forbidden = FORBIDDEN_NAMES - TORCH_POLICY_ALLOWED if policy == "torch" else FORBIDDEN_NAMES
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [f"the answer cell is not valid Python: {exc.msg} (line {exc.lineno})"]
    problems = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and policy == "torch":
            if node.decorator_list:
                problems.append(f"line {node.lineno}: {node.name} must be a plain function (no decorators)")
        elif isinstance(node, ast.FunctionDef):
            if not node.decorator_list or any(_dotted(d) not in ALLOWED_DECORATORS for d in node.decorator_list):
                problems.append(f"line {node.lineno}: {node.name} must be a @triton.jit function")
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring or a bare string
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and _is_constant(node.value):
            continue
        else:
            problems.append(f"line {node.lineno}: only @triton.jit functions and constants belong in this cell")
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal)):
            problems.append(f"line {node.lineno}: {type(node).__name__.lower()} statements are not allowed here")
        elif isinstance(node, ast.Name) and node.id in forbidden:
            problems.append(f"line {node.lineno}: uses {node.id!r}")
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            problems.append(f"line {node.lineno}: assigns to an attribute ({_dotted(node)})")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            problems.append(f"line {node.lineno}: uses {node.attr!r}")
    return list(dict.fromkeys(problems))


@dataclass
class Verification:
    violations: list = field(default_factory=list)
    results: dict = field(default_factory=dict)   # test grade_id -> (passed, message)
    scores: dict = field(default_factory=dict)    # test grade_id -> the value a partial-credit cell gave
    error: str = ""


def graded_test_cells(source_nb) -> list[tuple[str, str]]:
    return [(grade_id(c), strip_markers(c.source)) for c in source_nb.cells
            if c.cell_type == "code" and c.get("metadata", {}).get("nbgrader", {}).get("grade")]


def verify(submission: Path, source_path: Path, release_path: Path, kernel_cells, student_cell: str,
           timeout_s: float = 1800, policy: str = "triton") -> Verification:
    """Run the graded tests of `source_path` on the answer cell of `submission`, in a fresh process."""
    answer = cell_by_id(read(submission), student_cell).source
    outcome = Verification(violations=answer_cell_violations(answer, policy))
    if outcome.violations:
        return outcome
    release = read(release_path)
    parts = [answer if gid == student_cell else cell_by_id(release, gid).source for gid in kernel_cells]
    spec = {"module": "\n\n".join(parts) + "\n", "tests": graded_test_cells(read(source_path))}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        proc = subprocess.run([sys.executable, "-m", "autograder.grading.verify_worker", f.name],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        outcome.error = f"verification did not finish within {timeout_s:g} s"
        return outcome
    finally:
        Path(f.name).unlink(missing_ok=True)
    for line in proc.stdout.splitlines():
        if line.startswith("VERIFY "):
            item = json.loads(line[len("VERIFY "):])
            outcome.results[item["test"]] = (item["passed"], item["message"])
            if item.get("score") is not None:
                outcome.scores[item["test"]] = item["score"]
    if proc.returncode != 0 and not outcome.results:
        outcome.error = (proc.stderr.strip().splitlines() or ["verification crashed"])[-1][:200]
    return outcome


def apply_to_gradebook(db_url: str, assignment: str, notebook: str, student: str, outcome: Verification) -> list[str]:
    """Zero the tests the clean run does not confirm. Returns notes for the report."""
    from nbgrader.api import Gradebook, MissingEntry

    overturned, first = [], ""
    with Gradebook(db_url) as gb:
        try:
            sub = gb.find_submission_notebook(notebook, assignment, student)
        except MissingEntry:
            return []
        for grade in sub.grades:
            if not grade.max_score or not (grade.auto_score or 0):
                continue
            passed, message = outcome.results.get(grade.name, (False, outcome.error or "not confirmed"))
            if outcome.violations:
                passed, message = False, "the answer cell was rejected"
            if not passed:
                grade.manual_score = 0  # nbgrader's override: export and feedback use it
                overturned.append(grade.name)
                first = first or message
            elif outcome.scores.get(grade.name, grade.auto_score) < grade.auto_score:
                # A partial-credit cell (performance points) confirms only what the clean run gave.
                grade.manual_score = outcome.scores[grade.name]
                overturned.append(grade.name)
                first = first or f"{grade.name} gave {outcome.scores[grade.name]:g} of {grade.max_score:g} points"
        gb.db.commit()
    if not overturned:
        return []
    return [f"passed in the notebook but not in a clean re-run, lowered: {', '.join(overturned)} "
            f"(first: {first[:160]})"]
