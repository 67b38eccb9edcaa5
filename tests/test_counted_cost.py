"""Performance points without a GPU (the counted cost), and each grading task's thread cap.

Counting runs in the sandboxed candidate and crosses to the judge as data; the price is the
judge's arithmetic (autograder.counted_cost); an answer cell cannot reach either.
"""
import os
from dataclasses import replace

import pytest
import torch
import triton
import triton.language as tl

from autograder import threads
from autograder.counted_cost import ALU_RATE, DOT_RATES, HBM_BYTES_PER_S, SFU_RATE, Counts, counting, price
from autograder.grading.verify import answer_cell_violations
from autograder.inputs import Case
from autograder.performance import band_share, count_against_reference
from tests.conftest import RUNTIME

needs_interpreter = pytest.mark.skipif(not RUNTIME.interpreter, reason="counting runs under the Triton interpreter")


@triton.jit
def _probe(X, Y, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    idx = offs[:, None] * BLOCK + offs[None, :]
    x = tl.load(X + idx, mask=idx < n, other=0.0)   # float16, n of BLOCK*BLOCK lanes active
    s = tl.dot(x, x)                                 # 16-bit operands
    f = tl.dot(s, s)                                 # float32 operands
    e = tl.exp2(f * 0.0)                             # one element operation, one exponential per element
    tl.store(Y + idx, e / 2.0)                       # one division per element


@needs_interpreter
def test_a_kernel_is_counted_exactly():
    block, n, programs = 16, 100, 3
    x = torch.randn(block * block, dtype=torch.float16)
    y = torch.empty(block * block, dtype=torch.float32)
    with counting() as counts:
        _probe[(programs,)](x, y, n, BLOCK=block)
    assert torch.equal(y, torch.full_like(y, 0.5))  # counting changes nothing the kernel computes
    elements, flops = block * block, 2 * block ** 3
    assert counts.dot_flops == {"fp8": 0, "fp16": programs * flops, "fp32": programs * flops, "fp64": 0}
    assert counts.dots == 2 * programs and counts.programs == programs
    assert counts.exp == counts.sfu_other == counts.alu == programs * elements
    assert counts.bytes_loaded == programs * n * 2 and counts.bytes_stored == programs * elements * 4
    assert counts.memory_bytes == n * 2 + elements * 4  # each address once: every program reads and writes the same
    with counting() as again:  # the builder is itself again between counts
        _probe[(1,)](x, y, n, BLOCK=block)
    assert again.programs == 1 and again.dots == 2


def test_the_price_follows_the_h200_model():
    work = 1e9
    fp16, fp32 = Counts(dot_flops={**dict.fromkeys(DOT_RATES, 0), "fp16": int(work)}), \
        Counts(dot_flops={**dict.fromkeys(DOT_RATES, 0), "fp32": int(work)})
    assert price(fp32).seconds / price(fp16).seconds == pytest.approx(DOT_RATES["fp16"] / DOT_RATES["fp32"])
    both = Counts(dot_flops=fp16.dot_flops, exp=10 ** 6)
    assert price(both).seconds == pytest.approx(work / DOT_RATES["fp16"] + 1e6 / SFU_RATE)  # taking turns
    # Memory traffic and element work overlap the arithmetic: they cost only where they are the most.
    assert price(Counts(dot_flops=fp16.dot_flops, memory_bytes=10 ** 6)).seconds == price(fp16).seconds
    heavy = Counts(dot_flops=fp16.dot_flops, memory_bytes=10 ** 10)
    assert price(heavy).seconds == pytest.approx(1e10 / HBM_BYTES_PER_S)
    assert price(Counts(dot_flops=fp16.dot_flops, alu=10 ** 9)).seconds == pytest.approx(1e9 / ALU_RATE)


@pytest.mark.parametrize("forged", [
    None, [], {}, "counts",
    {**Counts().to_dict(), "exp": -1},
    {**Counts().to_dict(), "exp": 1.5},
    {**Counts().to_dict(), "exp": True},
    {**Counts().to_dict(), "exp": 1 << 70},
    {**Counts().to_dict(), "rebate": 0},
    {**Counts().to_dict(), "dot_flops": {"fp16": 1}},
    {**Counts().to_dict(), "dot_flops": {**Counts().dot_flops, "fp16": -5}},
])
def test_a_count_that_is_not_one_is_refused(forged):
    with pytest.raises(ValueError):
        Counts.from_dict(forged)
    assert Counts.from_dict(Counts(exp=3, programs=1).to_dict()) == Counts(exp=3, programs=1)


@pytest.mark.parametrize("cell", [
    "from autograder import counted_cost\n",
    "import autograder.counted_cost as cc\n",
    "@triton.jit\ndef f(x):\n    triton.runtime.interpreter.interpreter_builder.create_dot = None\n",
    "@triton.jit\ndef f(x, _semantic=None):\n    return _semantic.builder\n",
    "@triton.jit\ndef f(x):\n    return tl.core.builtins\n",
    "@triton.jit\ndef f(x):\n    return tl.dot.__globals__\n",
])
def test_an_answer_cell_cannot_reach_the_counters(cell):
    assert answer_cell_violations(cell)


# ------------------------------------------------------------------------------------------------
# The grade: right kernels that ask more of a GPU lose performance points; the others keep them.

@pytest.fixture(scope="module")
def problem3_samples():
    from autograder.grading.samples import PERFORMANCE, sample_kernel_function
    from autograder.problems import reference_function

    return reference_function("problem3"), {s.name: (s, sample_kernel_function("problem3", s))
                                            for s in PERFORMANCE["problem3"]}


@needs_interpreter
def test_extra_dots_float32_dots_and_products_without_dot_lose_the_points_the_gpu_takes(problem3_samples):
    from autograder.problems import problem3

    reference, samples = problem3_samples
    # Problem 3's counted case with one head instead of two: the same work per head, half the calls.
    plan = replace(problem3.SPEC.timing, cpu_case=replace(problem3.SPEC.timing.cpu_case, H=1))
    costs = {}
    for name in ("extra_dots", "float32_dot", "product_without_dot"):
        sample, fn = samples[name]
        answer_cell = answer_cell_violations(_answer(sample))
        assert not answer_cell, answer_cell
        costs[name] = cost = count_against_reference(fn, reference, plan)
        assert band_share(cost.ratio) * problem3.SPEC.performance_points == sample.expected_performance == 0, \
            cost.lines()
        assert cost.ratio > 1.6
    extra, float32, by_hand = costs["extra_dots"], costs["float32_dot"], costs["product_without_dot"]
    assert extra.student_counts.dots == extra.reference_counts.dots * 5 // 2  # 2 dots per key block, then 5
    assert float32.student_counts.dot_flops["fp32"] == float32.reference_counts.dot_flops["fp16"] // 2  # p @ v
    assert by_hand.student.alu_s > by_hand.student.dot_s + by_hand.student.sfu_s  # the CUDA cores decide
    # A count is exact: the reference counted twice gives the same count, so against itself the
    # ratio is 1 and the correct sample (the reference's own answer cell) earns every point.
    assert extra.reference_counts == float32.reference_counts
    assert price(extra.reference_counts).seconds / price(float32.reference_counts).seconds == 1.0


def _answer(sample):
    from autograder.kernel_module import apply_edits
    from autograder.notebook_code import cell_by_id, read, strip_markers
    from tests.conftest import REPO_ROOT

    solution = read(REPO_ROOT / "solutions" / "problem3" / "problem3.ipynb")
    return apply_edits(strip_markers(cell_by_id(solution, "online_softmax").source), sample.edits)


@needs_interpreter
def test_a_right_kernel_in_another_launch_order_keeps_its_points():
    """Problem 5's plain launch order: the same work in another order, full points on the H200."""
    from autograder.grading.samples import SAMPLES, expected_score, sample_kernel_function
    from autograder.problems import problem5, reference_function

    sample = next(s for s in SAMPLES["problem5"] if s.name == "plain_launch_order")
    cost = count_against_reference(sample_kernel_function("problem5", sample), reference_function("problem5"),
                                   problem5.SPEC.timing)
    deserved = expected_score(sample, "problem5") - sample.expected_points
    assert band_share(cost.ratio) * problem5.SPEC.performance_points == deserved == 2, cost.lines()


# ------------------------------------------------------------------------------------------------
# The judge's side: counts come from the sandboxed candidate as data, under the task's thread cap.

CANDIDATE_MODULE = '''
import os

import torch
import triton
import triton.language as tl


@triton.jit
def _exp2(X, Y, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(Y + offs, tl.exp2(tl.load(X + offs)))


def exp2_of(x):
    y = torch.empty_like(x)
    _exp2[(2,)](x, y, BLOCK=x.numel())
    return y


def thread_settings():
    return [torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"), os.environ.get("MKL_NUM_THREADS")]
'''


@pytest.fixture(scope="module")
def candidate(tmp_path_factory):
    from autograder.grading import sandbox
    from autograder.grading.judge import CandidateProcess

    if not sandbox.probe().available:
        pytest.skip(sandbox.probe().reason)
    saved = {name: os.environ.get(name) for name in threads.VARIABLES}
    os.environ.update({name: "3" for name in threads.VARIABLES})  # what threads.task_share sets for a task
    host = CandidateProcess(CANDIDATE_MODULE, sandboxed=True, gpu=False, label="counting")
    try:
        host.start()
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
    yield host
    host.stop()


@needs_interpreter
def test_the_sandboxed_candidate_counts_and_the_judge_receives_data(candidate):
    from autograder.grading.judge import RemoteFunction

    x = torch.randn(64, dtype=torch.float32)
    result, counts = RemoteFunction(candidate, "exp2_of").remote_count(x)
    torch.testing.assert_close(result, torch.exp2(x))
    assert isinstance(counts, Counts)
    assert (counts.exp, counts.programs, counts.memory_bytes) == (2 * 64, 2, 64 * 4 * 2)
    assert counts.bytes_loaded == 2 * 64 * 4  # both programs read all of x


def test_a_sandboxed_candidate_runs_under_the_task_thread_cap(candidate):
    from autograder.grading.judge import RemoteFunction

    assert RemoteFunction(candidate, "thread_settings")() == [3, "3", "3"]


def test_a_process_given_a_share_splits_that_share_not_the_machine(monkeypatch):
    """A pytest-xdist worker (tests/conftest.py) or a Ray worker given COURSE_THREADS hands its
    tasks a part of it."""
    monkeypatch.setenv(threads.ENV, "4")
    assert threads.share(2) == 2 and threads.share(8) == 1
    monkeypatch.setenv(threads.ENV, "1")
    with threads.task_share(1) as n:
        assert n == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ[threads.ENV] == "1"


def test_a_task_takes_its_share_of_the_cores_and_gives_it_back(monkeypatch):
    assert threads.share(4, available=16) == 4 and threads.share(32, available=16) == 1
    assert threads.share(0, available=6) == 6
    assert threads.ray_tasks_at_once(1.0) == 1  # outside a Ray worker: the only task
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv(threads.ENV, raising=False)
    before = torch.get_num_threads()
    with threads.task_share(threads.cores() * 2) as n:
        assert n == 1 and torch.get_num_threads() == 1
        assert [os.environ[name] for name in threads.VARIABLES] == ["1", "1", "1"]
        assert threads.apply() == 1
    assert os.environ["OMP_NUM_THREADS"] == "7" and threads.ENV not in os.environ
    assert torch.get_num_threads() == before
    # The notebook kernel's launcher hands the cap into its sandbox (the candidate's: the test above).
    from autograder.grading.sandboxed_kernel import PASSED_ENV

    assert set(threads.VARIABLES) <= set(PASSED_ENV)


def test_the_diagnosis_of_a_wrong_kernel_is_bounded(reference_kernel):
    from autograder.checks import DIAGNOSED_FAILURES, run_cases

    def off(q, k, v):
        o, lse = reference_kernel.flash_attention_forward(q, k, v)
        return o * 1.5, lse
    cases = [Case(1, 1, 64, 16, seed=i) for i in range(DIAGNOSED_FAILURES + 2)]
    verdicts = run_cases(off, cases)
    assert not any(v.passed for v in verdicts)
    assert all(v.findings for v in verdicts[:DIAGNOSED_FAILURES])
    assert not any(v.findings for v in verdicts[DIAGNOSED_FAILURES:])
    assert all("not sought" in v.note for v in verdicts[DIAGNOSED_FAILURES:])

