"""Faults only a GPU has: each costs its own submission and nothing else (run on a GPU runner)."""
import pytest

from autograder.grading.demo import run_demo
from autograder.grading.export import summary
from autograder.grading.samples import GPU_FAULTS, expected_score

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def graded(tmp_path_factory, repo_root):
    mp = pytest.MonkeyPatch()
    mp.setenv("COURSE_CELL_TIMEOUT_S", "60")
    mp.setenv("COURSE_SUBMISSION_TIMEOUT_S", "240")
    course = tmp_path_factory.mktemp("gpu-faults") / "course"
    run, _ = run_demo(repo_root, course, progress=False, gpu_faults=True,
                      only={s.name for s in GPU_FAULTS["problem3"]})
    rows = run.rows
    print(summary(rows))
    yield {r.student: r for r in rows}
    mp.undo()


@pytest.mark.parametrize("sample", GPU_FAULTS["problem3"], ids=lambda s: s.name)
def test_each_gpu_fault_gets_its_outcome_and_the_next_submission_a_healthy_gpu(graded, sample):
    row = graded[sample.name]
    assert row.score == expected_score(sample, "problem3"), summary([row])
    if sample.expected_note:
        assert any(sample.expected_note in t for t in row.notes + [row.problem]), summary([row])
