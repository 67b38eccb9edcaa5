"""Performance points: bands, the timing against the reference, and what earns nothing."""
import pytest

from autograder import performance
from autograder.checks import CheckFailed
from autograder.inputs import Case
from autograder.performance import TimingPlan, award, band_share, measure_against_reference, time_against_reference
from autograder.problems import problem3


@pytest.fixture(scope="module")
def reference(reference_kernel):
    return reference_kernel.flash_attention_forward


# Small enough for the interpreter (a call of the problem 3 kernel takes about 40 ms there); on a
# GPU big enough that the kernel, not the launch, sets the time (about 0.1 ms on an H100).
PLAN = TimingPlan(gpu_case=Case(4, 16, 2048, 64), cpu_case=Case(1, 2, 256, 32), gpu_rounds=3, cpu_rounds=5)


@pytest.mark.parametrize("ratio, share", [(0.5, 1.0), (1.0, 1.0), (1.3, 1.0), (1.31, 0.5), (1.6, 0.5),
                                          (1.61, 0.0), (2.0, 0.0), (float("inf"), 0.0)])
def test_bands(ratio, share):
    assert band_share(ratio) == share


def test_band_edges_are_increasing_and_shares_decreasing():
    edges = [e for e, _ in performance.BANDS]
    shares = [s for _, s in performance.BANDS]
    assert edges == sorted(edges) and shares == sorted(shares, reverse=True) and shares[0] == 1.0


# What grades speed here: on a GPU the timing, under the interpreter the counted cost (exact, so
# these hold without the noise of CPU timing).
def test_the_reference_against_itself_earns_everything(reference):
    measured = measure_against_reference(reference, reference, PLAN)
    assert 0.8 < measured.ratio < 1.25, measured.lines()
    assert measured.ratio == 1.0 or not measured.interpreter


def test_a_kernel_doing_twice_the_work_earns_nothing(reference):
    def twice(q, k, v):
        reference(q, k, v)
        return reference(q, k, v)
    measured = measure_against_reference(twice, reference, PLAN)
    assert 1.7 < measured.ratio < 2.5, measured.lines()
    assert measured.ratio == 2.0 or not measured.interpreter
    assert band_share(measured.ratio) == 0.0


def test_a_wrong_kernel_earns_nothing_however_fast(reference):
    def wrong(q, k, v):
        o, lse = reference(q, k, v)
        return o + 0.01, lse  # off by 0.01 everywhere: 2.5x the float16 tolerance of the comparison
    with pytest.raises(CheckFailed, match="differs from the reference kernel"):
        time_against_reference(wrong, reference, PLAN)


def test_pytorch_at_the_timed_shape_earns_nothing(reference):
    import torch

    def borrowed(q, k, v):
        if q.shape[2] >= 256:  # a shape switch: Triton for small tests, PyTorch for the timing
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            return o, torch.zeros(q.shape[:3])
        return reference(q, k, v)
    with pytest.raises(CheckFailed, match="does not come from a Triton kernel"):
        time_against_reference(borrowed, reference, PLAN)


def test_award_needs_the_gate_and_returns_points(reference, capsys):
    assert award(reference, reference, PLAN, points=2) == 2
    out = capsys.readouterr().out
    assert "ratio" in out and "earns 100% of 2 points" in out

    def failing_gate():
        raise CheckFailed("1 of 3 cases failed")
    with pytest.raises(CheckFailed, match="until the self-check passes: 1 of 3 cases failed"):
        award(reference, reference, PLAN, points=2, gate=failing_gate)


def test_without_the_reference_a_learner_is_told_and_the_sandboxed_notebook_defers_to_the_judge(
        reference, capsys, monkeypatch):
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    assert award(reference, None, PLAN, points=2) is None
    assert "measured when your notebook is graded" in capsys.readouterr().out
    # Under grading the notebook runs in the sandbox, without solutions/: it says who measures.
    monkeypatch.setenv("COURSE_GRADING", "1")
    assert award(reference, None, PLAN, points=2) == 0.0
    assert "measured by the grader" in capsys.readouterr().out


def test_every_triton_problem_times_a_case_its_kernel_accepts():
    from autograder.problems import ASSIGNMENTS, get_spec, performance_points

    timed = [a for a in ASSIGNMENTS if performance_points(a)]
    assert timed == ["problem2b", "problem3", "problem4", "problem5", "problem6", "problem7", "problem8"]
    for assignment in timed:
        plan = get_spec(assignment).timing
        assert plan.gpu_case.dtype == plan.cpu_case.dtype == "float16"  # every GPU Triton supports has it
        if assignment == "problem2b":  # rows of logits: tests/test_problem2b.py checks its plan
            continue
        assert plan.gpu_case.L >= 4096 and plan.cpu_case.L <= 1024
    assert problem3.SPEC.timing.gpu_case.D in (64, 128)
