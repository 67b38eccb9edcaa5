"""The judge's verdicts, written under the test cells of the autograded notebook.

While nbgrader runs a submission, its test cells run nothing (scratch._tests_stand_aside): the judge
runs every test outside the notebook (verify.py) and its verdicts are the points. This module puts
those verdicts where the student reads their feedback, as each cell's output: the case lines the
checks printed when the judge ran them (PASS/FAIL, the error against the tolerance, the likely cause),
then what the cell is worth. nbgrader's feedback renders the autograded notebook, so the feedback
shows exactly what decided the grade, hidden tests included (their cases' shapes and causes; their
code stays in the source notebook).
"""
from __future__ import annotations

from pathlib import Path

from .. import verdict

HEADER = "The grader's run of this cell (outside the notebook, on your answer cell alone):"


def _case_lines(case: dict) -> list[str]:
    findings = [verdict.Finding(f["code"], f["message"]) for f in case.get("findings", [])]
    return verdict.render(verdict.CaseVerdict(case["label"], bool(case["passed"]), case.get("summary", ""),
                                              findings, note=case.get("note", "")))


def render_test(test: dict | None, rejected: list, judge_error: str) -> str:
    """The text under one test cell: the judge's case lines, then the outcome of the cell."""
    lines = [HEADER]
    if rejected:
        return "\n".join(lines + ["Your answer cell was rejected before any test ran: " + "; ".join(rejected[:2]),
                                  "This cell gives no points."])
    if test is None:
        return "\n".join(lines + [f"The grader could not run it ({judge_error or 'no verdict'}): no points yet."])
    for case in test.get("cases", []):
        lines += _case_lines(case)
    if test.get("score") is not None:
        lines.append(f"Points from this cell: {test['score']:g}.")
    elif test["passed"]:
        n = len(test.get("cases", []))
        lines.append(f"All {n} cases passed." if n > 1 else "The case passed." if n else "Passed.")
    else:
        lines.append(f"FAILED: {test.get('message') or 'the test did not pass'}")
    return "\n".join(lines) + "\n"


def write_verdicts(notebook: Path, verdicts: list, rejected: list, judge_error: str = "") -> bool:
    """Replace the outputs of every graded test cell of `notebook` (an autograded notebook) with the
    judge's verdict for it. Returns False when there is no notebook to write into."""
    import nbformat

    from ..notebook_code import grade_id

    if not notebook.exists():
        return False
    nb = nbformat.read(str(notebook), as_version=4)
    by_test = {v["test"]: v for v in verdicts}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        gid = grade_id(cell)
        if cell.cell_type != "code" or not gid or not meta.get("grade") or meta.get("solution"):
            continue
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                               text=render_test(by_test.get(gid), rejected, judge_error))]
    nbformat.write(nb, str(notebook))
    return True
