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
from autograder.grading.samples import SAMPLES, expected_score
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
