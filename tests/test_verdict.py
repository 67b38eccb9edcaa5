"""Verdicts are data: one rendering for the printed lines, and a collector that graders read
instead of the printed text (which code under test can forge)."""
import json
import math

import pytest
import torch

from autograder import verdict
from autograder.checks import CheckFailed, assert_cases
from autograder.diagnose import Finding
from autograder.grading import sandbox
from autograder.inputs import Case
from autograder.problems import problem1, problem5
from autograder.references import create_mask_bool

LABEL = "B=1 H=2 L=64 D=32 float16"


def test_pass_line_is_unchanged():
    v = verdict.CaseVerdict(LABEL, True, "max|err| 4.9e-04 (tol 0.002); lse max|err| 9.5e-07")
    assert v.lines() == [
        "PASS  B=1 H=2 L=64 D=32 float16                  max|err| 4.9e-04 (tol 0.002); lse max|err| 9.5e-07"]


def test_fail_line_with_findings_is_unchanged():
    v = verdict.CaseVerdict(LABEL, False, "output: max|err| 0.31 > tol 0.002 (first at batch 0, head 1, row 60)",
                            [Finding("unmasked_tail", "keys past the end are scored 0"),
                             Finding("no_normalise", "divide acc by l_i")])
    assert verdict.render(v) == [
        "FAIL  B=1 H=2 L=64 D=32 float16                  output: max|err| 0.31 > tol 0.002 (first at batch 0, "
        "head 1, row 60)",
        "      likely cause (unmasked_tail): keys past the end are scored 0",
        "      likely cause (no_normalise): divide acc by l_i"]
    assert v.reason == "keys past the end are scored 0"


def test_note_line_and_label_width():
    v = verdict.CaseVerdict("rows=2 cols=64 block=16 float32", True, "max|err| 1.0e-07 (tol 1e-06)",
                            note="bfloat16 ran as float16", width=46)
    assert verdict.text([v]) == (
        "PASS  rows=2 cols=64 block=16 float32                max|err| 1.0e-07 (tol 1e-06)\n"
        "      note: bfloat16 ran as float16")


def test_test_verdict_as_json():
    cases = [verdict.CaseVerdict("a", True, "fine", max_error=1e-4, tolerance=2e-3),
             verdict.CaseVerdict("b", False, "output: max|err| inf", [
                 Finding("some_nan", "2 NaNs\nsecond line"), Finding("raised", "x"), Finding("some_nan", "other")],
                 max_error=math.inf, tolerance=2e-3, where="first at batch 0")]
    data = json.loads(json.dumps(verdict.TestVerdict("test_x", False, "1 of 2 cases failed", cases).to_dict()))
    assert data["test"] == "test_x" and data["passed"] is False and data["message"] == "1 of 2 cases failed"
    assert data["findings"] == {"some_nan": "2 NaNs", "raised": "x"}  # first message per code, one line
    assert [c["label"] for c in data["cases"]] == ["a", "b"]
    assert data["cases"][1]["max_error"] is None and data["cases"][1]["where"] == "first at batch 0"
    assert data["cases"][1]["findings"][0] == {"code": "some_nan", "message": "2 NaNs\nsecond line"}


def test_collectors_nest_and_end_with_their_block(capsys):
    v = verdict.CaseVerdict("a", True, "fine")
    verdict.report(v)                       # no collector: printed only
    with verdict.collect() as outer:
        with verdict.collect() as inner:
            verdict.report(v)
        verdict.report(v)
    verdict.report(v)
    assert len(inner) == 1 and len(outer) == 2
    assert capsys.readouterr().out.count("PASS  a") == 4


# --- the collector hears the checks, and nothing the code under test prints ---------------------

def _naive(q, k, v, chatter=()):
    for line in chatter:
        print(line)
    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return (torch.softmax(s, dim=-1) @ v.float()).to(q.dtype), torch.logsumexp(s, dim=-1)


FORGED = ("FAIL  forged case                                 output wrong",
          "      likely cause (cached_output): forged",
          "PASS  forged case                                 max|err| 0")
CASES = [Case(1, 2, 32, 16, "float32"), Case(1, 1, 20, 16, "float32", seed=1)]


def test_assert_cases_reports_each_case_and_forged_lines_do_not_count(capsys):
    with verdict.collect() as found:
        assert_cases(lambda q, k, v: _naive(q, k, v, FORGED), CASES, require_triton=False,
                     runtime=problem1.torch_runtime())
    out = capsys.readouterr().out
    assert "likely cause (cached_output): forged" in out          # printed, as the student sees it
    assert [v.label for v in found] == [c.label() for c in CASES]
    assert all(v.passed and not v.findings for v in found)
    assert all(v.tolerance == 1e-4 and v.max_error < 1e-4 for v in found)


def test_a_failing_check_carries_its_verdicts():
    def off_by_one(q, k, v):
        o, lse = _naive(q, k, v, ("PASS  " + CASES[0].label(),))
        return o + 1, lse

    with verdict.collect() as found, pytest.raises(CheckFailed) as failed:
        assert_cases(off_by_one, CASES, require_triton=False, runtime=problem1.torch_runtime())
    assert [v.passed for v in found] == [False, False]
    assert failed.value.verdicts == found
    assert "max|err| 1 > tol" in found[0].summary and found[0].where.startswith("first at batch 0")


def test_a_problem_modules_own_check_loop_reports_to_the_collector():
    def schedule(batch, n_q_heads, n_kv_heads, n_m_blocks):
        print("      likely cause (schedule_order): forged")
        return torch.tensor(problem5.expected_schedule(batch, n_q_heads, n_kv_heads, n_m_blocks))

    def plain_order(batch, n_q_heads, n_kv_heads, n_m_blocks):
        print("PASS  forged")
        return torch.tensor([(b, h, m) for b in range(batch) for h in range(n_q_heads) for m in range(n_m_blocks)])

    with verdict.collect() as right:
        problem5.assert_schedule(schedule, [(1, 4, 2, 3), (2, 2, 1, 2)])
    assert [v.passed for v in right] == [True, True] and not any(v.findings for v in right)
    with verdict.collect() as wrong, pytest.raises(CheckFailed):
        problem5.assert_schedule(plain_order, [(1, 4, 2, 3)])
    assert [f.code for v in wrong for f in v.findings] == ["schedule_not_grouped"]


def test_mask_check_reports_one_verdict_per_length():
    with verdict.collect() as found, pytest.raises(CheckFailed):
        problem1.assert_masks(lambda n, w, s: create_mask_bool(n, w - 1, s) if n == 8 else create_mask_bool(n, w, s),
                              [(6, 3, 1), (8, 3, 2)])
    assert [(v.label, v.passed) for v in found] == [("L=6: W=3 S=1", True), ("L=8: W=3 S=2", False)]
    assert [f.code for f in found[1].findings] == ["window_off_by_one"]


# --- the judge keeps the verdicts of its own checks ----------------------------------------------
# (as data, beside each graded notebook: tests/test_class_grading.py reads the demo class's)

@pytest.mark.slow
@pytest.mark.skipif(not sandbox.probe().available, reason=f"no sandbox: {sandbox.probe().reason}")
@pytest.mark.parametrize("cause", ["rowsum_scores"])
def test_the_judge_never_calls_an_honest_mistake_a_cached_result(repo_root, tmp_path, cause):
    """The mistake gives an all-zero output on a one-key case (the first case of a hidden test): the
    judge names it and accuses no one. (acc_rescale_after_add gives the same all-zero output: the
    check that accuses is tested on both in tests/test_problem3.py, and the judge's path does not
    depend on the mistake, so one whole judge run stands for both; every mutant of
    scripts/mutation_score.py is checked the same way.)"""
    from autograder.grading.samples import apply_edits
    from autograder.grading.verify import verify
    from autograder.notebook_code import cell_by_id, read, strip_markers
    from autograder.problems import problem3
    from tests.test_problem3 import MISTAKES

    source, release = repo_root / "solutions/problem3/problem3.ipynb", repo_root / "notebooks/problem3/problem3.ipynb"
    nb = read(release)
    answer = strip_markers(cell_by_id(read(source), problem3.SPEC.student_cell).source)
    cell_by_id(nb, problem3.SPEC.student_cell).source = apply_edits(answer, MISTAKES[cause])
    submission = tmp_path / "problem3.ipynb"
    nbformat_write(nb, submission)
    outcome = verify(submission, source, release, problem3.SPEC.kernel_cells, problem3.SPEC.student_cell, timeout_s=900)
    assert not outcome.grader_error and not outcome.error, outcome.log[-2000:]
    codes = {code for v in outcome.verdicts for code in v["findings"]}
    assert "cached_output" not in codes and cause in codes, codes
    assert not all(passed for passed, _ in outcome.results.values())


def nbformat_write(nb, path):
    import nbformat

    nbformat.write(nb, str(path))
