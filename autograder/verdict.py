"""Verdicts as data: what a check found, rendered as text only for people.

A check builds one `CaseVerdict` per input and hands it to `report`, which prints it (the
student's feedback) and gives it to every active `collect()`. Graders read the collected
objects, never the printed text: a submission can print anything, but it cannot add to the
verdicts of checks that run outside its process.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass, field

LABEL_WIDTH = 42          # the label column of a verdict line
FINDING_CHARS = 400       # a finding's message in a test's summary of causes


@dataclass(frozen=True)
class Finding:
    code: str      # stable identifier, e.g. "unmasked_tail"
    message: str   # one sentence for the student

    def __str__(self):
        return self.message


@dataclass
class CaseVerdict:
    """The verdict on one input of a check."""
    label: str                        # which input, e.g. "B=1 H=2 L=200 D=32 float16"
    passed: bool
    summary: str                      # what was measured, or what went wrong
    findings: list = field(default_factory=list)   # Findings: the likely causes when wrong
    note: str = ""                    # e.g. "bf16 ran as fp16 under the interpreter"
    max_error: float | None = None    # the largest error of the quantity compared
    tolerance: float | None = None    # the absolute tolerance it was compared with
    where: str = ""                   # where it first goes wrong (batch, head, row)
    case: object = None               # the input description the check used, when it has one
    width: int = LABEL_WIDTH          # the label column this check prints

    @property
    def reason(self) -> str:
        """Why it failed, in one sentence: the first likely cause, else the summary."""
        return self.findings[0].message if self.findings else self.summary

    def lines(self) -> list[str]:
        return render(self)

    def to_dict(self) -> dict:
        return {"label": self.label, "passed": self.passed, "summary": self.summary,
                "findings": [{"code": f.code, "message": f.message} for f in self.findings],
                "note": self.note, "max_error": _finite(self.max_error), "tolerance": _finite(self.tolerance),
                "where": self.where}


def render(verdict: CaseVerdict) -> list[str]:
    """The printed lines of a case verdict: PASS/FAIL with label and summary, the note, the causes."""
    out = [f"{'PASS' if verdict.passed else 'FAIL'}  {verdict.label:<{verdict.width}} {verdict.summary}"]
    if verdict.note:
        out.append(f"      note: {verdict.note}")
    return out + [f"      likely cause ({f.code}): {f.message}" for f in verdict.findings]


def text(verdicts) -> str:
    """Several case verdicts as the text the checks print for them."""
    return "\n".join(line for v in verdicts for line in render(v))


@dataclass
class TestVerdict:
    """The verdict on one graded test: passed or not, why, and the case verdicts its checks gave."""
    test: str                         # the test cell's grade id
    passed: bool
    reason: str = ""                  # why it failed (the check's message, or the error)
    cases: list = field(default_factory=list)
    score: float | None = None        # the value a partial-credit test returned

    def findings(self) -> dict:
        """{code: message} of every likely cause its cases named, first message per code, one line each."""
        found: dict[str, str] = {}
        for case in self.cases:
            for f in case.findings:
                first_line = (f.message.splitlines() or [""])[0]
                found.setdefault(f.code, first_line.strip()[:FINDING_CHARS])
        return found

    def to_dict(self) -> dict:
        return {"test": self.test, "passed": self.passed, "message": self.reason, "score": self.score,
                "findings": self.findings(), "cases": [c.to_dict() for c in self.cases]}


def _finite(x):
    """JSON has no inf or NaN: such an error is in the summary text, the number is left out."""
    return float(x) if x is not None and math.isfinite(x) else None


# --- collecting -----------------------------------------------------------------------------------

_collectors: contextvars.ContextVar[tuple] = contextvars.ContextVar("verdict_collectors", default=())


@contextlib.contextmanager
def collect():
    """Yield a list that receives every case verdict reported while the block runs (nested
    collectors each receive all of them)."""
    bucket: list = []
    token = _collectors.set(_collectors.get() + (bucket,))
    try:
        yield bucket
    finally:
        _collectors.reset(token)


def report(verdict: CaseVerdict) -> CaseVerdict:
    """Give a case verdict to the active collectors and print it."""
    for bucket in _collectors.get():
        bucket.append(verdict)
    print("\n".join(render(verdict)), flush=True)
    return verdict
