"""What a benchmark cell says when it cannot time anything, on each kind of machine."""
import torch

from autograder import benchmark


def test_grading_skips_timings(monkeypatch):
    monkeypatch.setenv("COURSE_GRADING", "1")
    assert benchmark.kernel_skip_reason() == benchmark.GRADING_SKIP


def test_no_gpu_says_so_and_what_to_do(monkeypatch):
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reason = benchmark.kernel_skip_reason("see the time grow linearly with L")
    assert reason.startswith("No GPU here") and reason.endswith("see the time grow linearly with L.")


def test_a_gpu_too_old_for_triton_is_named(monkeypatch):
    """A T4: CUDA works, but the kernels run in the interpreter, so timing them means nothing."""
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    reason = benchmark.kernel_skip_reason()
    assert "Tesla T4" in reason and "8.0" in reason and "No GPU here" not in reason


def test_a_supported_gpu_is_timed(monkeypatch):
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert benchmark.kernel_skip_reason() is None


def test_the_reference_kernel_is_at_hand_in_the_course_repository(runtime):
    """Benchmarks time the learner's kernel next to the reference when solutions/ is there."""
    from autograder.checks import run_case
    from autograder.inputs import Case
    from autograder.problems import ASSIGNMENTS, reference_function

    for assignment, case in (("problem3", Case(1, 2, 70, 32)), ("problem4", Case(1, 2, 70, 32, causal=True)),
                             ("problem5", Case(1, 4, 70, 32, H_kv=2)),
                             ("problem6", Case(1, 2, 70, 32, window=20, sink=4))):
        assert assignment in ASSIGNMENTS
        result = run_case(reference_function(assignment), case, runtime)
        assert result.passed, "\n".join(result.lines())
