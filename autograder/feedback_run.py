"""The graded notebook's own run is feedback; the judge decides every point (grading/verify.py).

While nbgrader runs a submission (COURSE_FEEDBACK_RUN=1, set by grading/nbgrader_cli.py for that
run only), what helps only a learner at work stands aside: the self-check, whose cases the judge
runs with the graded tests (their verdicts are written under the test cells, which run nothing in
the notebook: grading/feedback_verdicts.py), and the chapter's figures. Grading a class then
costs a notebook run less per submission. The judge never sees the variable (it drops it), so its
own calls of a problem's `check` (the performance gate) always run.
"""
from __future__ import annotations

import functools
import os

ENV = "COURSE_FEEDBACK_RUN"


def in_feedback_run() -> bool:
    return os.environ.get(ENV) == "1"


def learner_only(note: str):
    """Decorate a function that only helps a learner: in the graded run it prints `note` and
    returns None instead of running."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if in_feedback_run():
                print(note)
                return None
            return fn(*args, **kwargs)
        return wrapper
    return decorate


SELF_CHECK = learner_only("The self-check stands aside while the notebook is graded: the grader runs the "
                          "same cases outside the notebook, and its verdicts are under the test cells below.")
FIGURE = learner_only("(The figure is not drawn while the notebook is graded.)")
