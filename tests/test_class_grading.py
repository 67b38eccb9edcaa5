"""Grading a class end to end through real nbgrader, one submission after another (the demo).

A class of the bundled samples (tests.helpers.DEMO_CLASS: the first named mistake of a problem of
each kind of check, and problem 3's correct and untouched notebooks) is graded once per test run
(conftest.demo_class, which the Ray class is also compared with), and every grade, cause, export
and feedback file is checked.
Every problem's correct answer is graded end to end on Ray (tests/test_ray_grading.py) but problem
1's, which the README's instructor commands grade (tests/test_instructor_course.py), and every
untouched answer cell is named "not implemented" by each problem's own tests.
"""
import csv
import json

import pytest

from autograder.grading.export import summary
from autograder.grading.report import causes_from_judge
from autograder.grading.samples import SAMPLES, expected_score
from autograder.notebook_code import grade_id, read
from autograder.problems import total_points
from tests.helpers import DEMO_CLASS


@pytest.fixture(scope="module")
def demo(demo_class):
    return demo_class


def _sample(student, assignment):
    """The bundled sample a demo submission was made from."""
    return next(s for s in SAMPLES[assignment] if s.name == student)


@pytest.mark.slow
def test_the_demo_class_covers_each_kind_of_check_with_a_named_mistake(demo):
    _, rows, _ = demo
    assert {a for _, a in rows} == set(DEMO_CLASS)
    for assignment in DEMO_CLASS:
        graded = {_sample(s, a).name for s, a in rows if a == assignment}
        assert graded == DEMO_CLASS[assignment], assignment
        assert any(_sample(s, a).expected_cause not in ("", "not_implemented") for s, a in rows if a == assignment)


@pytest.mark.slow
def test_each_submission_gets_the_score_it_deserves_and_its_cause(demo):
    _, rows, _ = demo
    for (student, assignment), row in rows.items():
        sample = _sample(student, assignment)
        assert row.score == expected_score(sample, assignment), summary([row])
        assert row.max_score == total_points(assignment)
        if sample.expected_cause:
            assert sample.expected_cause in row.causes, summary([row])
        else:
            assert not row.causes and not row.failed_tests, summary([row])


@pytest.mark.slow
def test_outputs_of_the_pipeline_exist_and_agree(demo):
    course, rows, _ = demo
    with open(course / "grades.csv") as f:
        exported = {(r["student_id"], r["assignment"]): float(r["score"]) for r in csv.DictReader(f)}
    assert {key: exported[key] for key in rows} == {key: row.score for key, row in rows.items()}
    assert (course / "grades.png").stat().st_size > 10_000
    feedback = list((course / "feedback").glob("*/problem3/problem3.html"))
    assert len(feedback) == sum(a == "problem3" for _, a in rows)
    untouched = (course / "feedback" / "untouched" / "problem3" / "problem3.html").read_text()
    assert "not implemented yet" in untouched


@pytest.mark.slow
def test_the_feedback_shows_the_judges_verdict_under_each_test_cell(demo):
    """The test cells ran nothing in the notebook (scratch._tests_stand_aside); under each one the
    feedback shows the judge's verdict that gave its points: a mistake's cause under the cells it lost."""
    from autograder.grading.feedback_verdicts import HEADER
    from autograder.grading.scratch import STAND_ASIDE_NOTE

    course, rows, _ = demo
    mistake = next(s for (s, a) in rows if a == "problem3" and _sample(s, a).expected_cause
                   and _sample(s, a).expected_cause != "not_implemented")
    cause = _sample(mistake, "problem3").expected_cause
    graded = read(course / "autograded" / mistake / "problem3" / "problem3.ipynb")
    tests = {grade_id(c): "".join(o.get("text", "") for o in c.outputs) for c in graded.cells
             if c.cell_type == "code" and (grade_id(c) or "").startswith("test_")}
    assert tests and all(text.startswith(HEADER) for text in tests.values()), tests
    assert any(f"likely cause ({cause})" in text for text in tests.values()), tests
    assert all(STAND_ASIDE_NOTE in c.source for c in graded.cells if grade_id(c) == "test_full_blocks")
    feedback = (course / "feedback" / mistake / "problem3" / "problem3.html").read_text()
    assert f"likely cause ({cause})" in feedback and "FAILED:" in feedback
    correct = (course / "feedback" / "correct" / "problem3" / "problem3.html").read_text()
    assert "All 2 cases passed." in correct and "FAILED:" not in correct


@pytest.mark.slow
def test_hidden_tests_ran_in_the_judge_and_never_in_the_students_kernel(demo):

    course, _, _ = demo
    graded = (course / "autograded" / "correct" / "problem3" / "problem3.ipynb").read_text()
    released = (course / "notebooks" / "problem3" / "problem3.ipynb").read_text()
    feedback = (course / "feedback" / "correct" / "problem3" / "problem3.html").read_text()
    # The hidden cases are in the source only: not released, not sent to the student's kernel, not in the feedback.
    assert "seed=14" not in released and "seed=14" not in graded and "seed=14" not in feedback
    assert "the grader runs them outside this notebook" in graded
    verdicts = json.loads((course / "autograded" / "correct" / "problem3" / "judge-verdicts.json").read_text())
    judged = {v["test"]: v["passed"] for v in verdicts["verdicts"]}
    assert judged["test_hidden_lengths"] is True and all(judged.values())
    assert "Benchmark skipped while grading" in graded


@pytest.mark.parametrize("student", ["correct", "unmasked_tail"])
def test_the_judge_records_findings_and_cases_as_data(demo, student):
    """The judge's verdicts beside the graded notebook: one per graded test of the source, each with
    its cases and the findings' codes, and the causes the grade report reads from them. The demo
    class is graded with COURSE_FEEDBACK_RUN=1 in the driver's environment (conftest.demo_class):
    the judge runs its own checks all the same, so a wrong kernel fails the performance gate."""
    course, _, _ = demo
    path = course / "autograded" / student / "problem3" / "judge-verdicts.json"
    saved = json.loads(path.read_text())
    assert saved["violations"] == []
    by_test = {v["test"]: v for v in saved["verdicts"]}
    source = read(course / "solutions" / "problem3" / "problem3.ipynb")
    graded = {grade_id(c) for c in source.cells if c.metadata.get("nbgrader", {}).get("grade")}
    assert set(by_test) == graded
    assert [v for v in saved["verdicts"] if v["cases"]], "the judge's checks reported no case verdicts"
    for v in saved["verdicts"]:
        assert v["passed"] == all(c["passed"] for c in v["cases"]) or v["score"] is not None, v
        assert set(v["findings"]) == {f["code"] for c in v["cases"] for f in c["findings"]}, v
    failed = [v for v in saved["verdicts"] if not v["passed"]]
    causes = causes_from_judge(path)
    if student == "correct":
        assert not failed and causes == {}
    else:
        assert not by_test["test_performance"]["passed"], by_test["test_performance"]
        assert set(by_test["test_tail_block"]["findings"]) == {"unmasked_tail"}
        assert set(causes) == {"unmasked_tail"} and causes["unmasked_tail"].startswith("keys past the end")
