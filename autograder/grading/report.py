"""Read grades back out of nbgrader's gradebook and the judge's verdicts, and show them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SubmissionGrade:
    student: str
    assignment: str
    score: float | None
    max_score: float
    failed_tests: list = field(default_factory=list)
    causes: dict = field(default_factory=dict)     # code -> first message seen
    problem: str = ""                              # why grading did not complete normally
    notes: list = field(default_factory=list)      # what intake noticed (renamed, tampered, ...)


def causes_from_judge(path: Path) -> dict | None:
    """{finding code: message} from the judge's verdicts (None when there are none): the causes
    the grader's own checks found, hidden tests included, which no submission can print."""
    import json

    if not path.exists():
        return None
    found: dict[str, str] = {}
    for verdict in json.loads(path.read_text()).get("verdicts", []):
        if not verdict.get("passed"):
            for code, text in verdict.get("findings", {}).items():
                found.setdefault(code, text)
    return found


def read_grades(course_root: Path, assignment: str, notebook: str, students) -> list[SubmissionGrade]:
    from nbgrader.api import Gradebook, MissingEntry

    rows = []
    db = f"sqlite:///{course_root / 'build' / 'gradebook.db'}"
    with Gradebook(db) as gb:
        for student in students:
            try:
                sub = gb.find_submission_notebook(notebook, assignment, student)
            except MissingEntry:
                rows.append(SubmissionGrade(student, assignment, None, 0, problem="not graded"))
                continue
            failed = [g.name for g in sorted(sub.grades, key=lambda g: g.name)
                      if g.max_score and (g.score or 0) < g.max_score]
            folder = course_root / "autograded" / student / assignment
            # Only the judge's verdicts name causes: the notebook's output is the submission's to forge.
            causes = causes_from_judge(folder / "judge-verdicts.json") or {}
            rows.append(SubmissionGrade(student, assignment, sub.score, sub.max_score, failed, causes))
    return rows


def format_table(rows: list[SubmissionGrade]) -> str:
    width = max([len(r.student) for r in rows] + [10])
    lines = [f"{'submission':<{width}}  {'problem':<9} {'score':>7}  failed tests / likely cause"]
    lines.append("-" * (width + 80))
    for r in rows:
        score = "-" if r.score is None else f"{r.score:g}/{r.max_score:g}"
        lines.append(f"{r.student:<{width}}  {r.assignment:<9} {score:>7}  "
                     + (", ".join(r.failed_tests) if r.failed_tests else (r.problem or "all tests pass")))
        for code, text in r.causes.items():
            lines.append(f"{'':<{width}}  {'':<9} {'':>7}    -> ({code}) {text[:140]}")
        if r.problem and r.failed_tests:
            lines.append(f"{'':<{width}}  {'':<9} {'':>7}    !! {r.problem}")
        for note in (n for n in r.notes if n != r.problem):
            lines.append(f"{'':<{width}}  {'':<9} {'':>7}    note: {note}")
    return "\n".join(lines)


def plot_grades(rows: list[SubmissionGrade], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graded = [r for r in rows if r.score is not None]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(graded) + 1.5))
    names = [f"{r.student} ({r.assignment})" for r in graded]
    scores = [r.score for r in graded if r.score is not None]  # all of graded: said for the type checker
    maxima = [r.max_score for r in graded]
    ax.barh(names, maxima, color="#eeeeee", label="available")
    ax.barh(names, scores, color="#3182bd", label="scored")
    for i, (s, m) in enumerate(zip(scores, maxima, strict=True)):
        ax.text(m, i, f" {s:g}/{m:g}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("points")
    ax.set_title("Grades by submission")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
