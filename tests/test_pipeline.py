"""The instructor pipeline, end to end through real nbgrader, on the bundled sample submissions."""
import csv

import pytest

from autograder.grading.pipeline import run_demo, summary
from autograder.grading.samples import SAMPLES


@pytest.fixture(scope="module")
def demo(tmp_path_factory, repo_root):
    course = tmp_path_factory.mktemp("demo") / "course"
    rows, expected = run_demo(repo_root, course, progress=False)
    return course, {r.student: r for r in rows}, expected


@pytest.mark.slow
@pytest.mark.parametrize("sample", SAMPLES["problem3"], ids=lambda s: s.name)
def test_each_sample_gets_the_score_it_deserves_and_its_cause(demo, sample):
    _, rows, _ = demo
    row = rows[sample.name]
    assert row.score == sample.expected_points, summary([row])
    assert row.max_score == 10
    if sample.expected_cause:
        assert sample.expected_cause in row.causes, summary([row])
    else:
        assert not row.causes and not row.failed_tests


@pytest.mark.slow
def test_outputs_of_the_pipeline_exist_and_agree(demo):
    course, rows, _ = demo
    with open(course / "grades.csv") as f:
        exported = {r["student_id"]: float(r["score"]) for r in csv.DictReader(f)}
    assert exported == {name: row.score for name, row in rows.items()}
    assert (course / "grades.png").stat().st_size > 10_000
    feedback = list((course / "feedback").glob("*/problem3/problem3.html"))
    assert len(feedback) == len(rows)
    untouched = (course / "feedback" / "untouched" / "problem3" / "problem3.html").read_text()
    assert "not implemented yet" in untouched


@pytest.mark.slow
def test_hidden_tests_ran_in_grading_but_are_absent_from_the_release(demo):
    course, _, _ = demo
    graded = (course / "autograded" / "correct" / "problem3" / "problem3.ipynb").read_text()
    released = (course / "notebooks" / "problem3" / "problem3.ipynb").read_text()
    assert "Case(1, 1, 1000, 64, seed=14)" in graded and "seed=14" not in released
    assert "Benchmark skipped while grading" in graded
