"""The graded notebook's run skips what only helps a learner (self-check, figures); nothing else does."""
import pytest

from autograder.checks import CheckFailed
from autograder.grading import nbgrader_cli
from autograder.plots import plot_online_softmax
from autograder.problems import problem3


def _wrong(q, k, v):
    raise RuntimeError("not written yet")


def test_the_self_check_runs_for_a_learner(monkeypatch):
    monkeypatch.delenv("COURSE_FEEDBACK_RUN", raising=False)
    with pytest.raises(CheckFailed):
        problem3.check(_wrong)


def test_the_self_check_and_figures_stand_aside_in_the_graded_run(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_FEEDBACK_RUN", "1")
    assert problem3.check(_wrong) is None
    assert plot_online_softmax(seq_len=64, block_n=16) is None
    printed = capsys.readouterr().out
    assert "verdicts are under the test cells below" in printed and "figure is not drawn" in printed


def test_only_the_nbgrader_run_is_marked(monkeypatch, tmp_path):
    seen = {}

    class Stop(Exception):
        pass

    def popen(cmd, env=None, **kwargs):
        seen.update(env)
        raise Stop

    monkeypatch.setattr(nbgrader_cli.subprocess, "Popen", popen)
    with pytest.raises(Stop):
        nbgrader_cli.run_nbgrader(tmp_path, "autograde", "problem3")
    assert seen["COURSE_FEEDBACK_RUN"] == "1" and seen["COURSE_GRADING"] == "1"
