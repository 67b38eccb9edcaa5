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


def _bench_args(*argv):
    from autograder.cli import build_parser

    return build_parser().parse_args(["bench", *argv])


def test_bench_shape_options_reach_each_problems_benchmark_under_its_names():
    """`autograder bench --problem problem7 --batch 16 --heads 12 --lengths 1024 --dims 64 --causal yes`
    times the GPT-2 training shape; a problem's own shapes stay where nothing is given."""
    import pytest

    from autograder.cli import _shape_overrides
    from autograder.problems import get

    args = _bench_args("--problem", "problem7", "--batch", "16", "--heads", "12", "--lengths", "1024",
                       "--dims", "64", "--causal", "yes")
    assert _shape_overrides(args, get("problem7").benchmark) == {
        "lengths": (1024,), "batch": 16, "heads": 12, "head_dims": (64,), "causal": (True,)}
    assert _shape_overrides(_bench_args("--problem", "problem4"), get("problem4").benchmark) == {}
    assert _shape_overrides(_bench_args("--problem", "problem4", "--dims", "128"),
                            get("problem4").benchmark) == {"head_dim": 128}
    with pytest.raises(SystemExit, match="one head dimension"):
        _shape_overrides(_bench_args("--problem", "problem4", "--dims", "64", "128"), get("problem4").benchmark)
    with pytest.raises(SystemExit, match="no causal"):
        _shape_overrides(_bench_args("--problem", "problem4", "--causal", "yes"), get("problem4").benchmark)

