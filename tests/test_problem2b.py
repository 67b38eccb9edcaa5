"""Problem 2b (a first Triton kernel: the row-wise online softmax): the reference passes every graded
cell, each sample earns its points and names its cause, each mistake is re-enacted exactly, and the
graded inputs really hold what they claim (tail blocks, masked first blocks, overflowing logits)."""
import contextlib
import io
import math

import pytest
import torch

from autograder import problems, verdict
from autograder.checks import CheckFailed
from autograder.grading.samples import SAMPLES
from autograder.grading.verify import graded_test_cells
from autograder.kernel_module import import_kernel_module
from autograder.notebook_code import cell_by_id, grade_id, read, strip_markers
from autograder.performance import TimingPlan, time_against_reference
from autograder.problems import problem2b
from autograder.problems.problem2b import RowsCase, after_row, make_logits, reenact, run_kernel_case
from tests.helpers import checked_cases, codes

SOURCE = "solutions/problem2b/problem2b.ipynb"
RELEASED = "notebooks/problem2b/problem2b.ipynb"
PROBLEM_SAMPLES = SAMPLES["problem2b"]
KERNEL_SAMPLES = [s for s in PROBLEM_SAMPLES if s.edits]


@pytest.fixture(scope="module")
def source_nb(repo_root):
    return read(repo_root / SOURCE)


@pytest.fixture(scope="module")
def solution_code(source_nb):
    return strip_markers(cell_by_id(source_nb, problem2b.SPEC.student_cell).source)


@pytest.fixture(scope="module")
def reference(repo_root):
    return problems.reference_module(problem2b.SPEC, repo_root)


def variant(source_nb, edits=(), student_code=None, name="variant"):
    return import_kernel_module(problem2b.SPEC, source_nb, answer=student_code, edits=edits, name=name)


def correctness_cells(source_nb):
    return [(gid, code) for gid, code in graded_test_cells(source_nb) if gid != "test_performance"]


def run_cells(module, source_nb):
    """{grade_id: (passed, {cause codes})} for every graded correctness cell, run in-process on
    `module`'s functions as the judge runs them."""
    outcome = {}
    for gid, code in correctness_cells(source_nb):
        namespace = {k: v for k, v in vars(module).items() if not k.startswith("__")}
        with verdict.collect() as cases, contextlib.redirect_stdout(io.StringIO()):
            try:
                exec(compile(code, f"<{gid}>", "exec"), namespace)
                passed = True
            except CheckFailed:
                passed = False
        outcome[gid] = (passed, {f.code for case in cases for f in case.findings})
    return outcome


@pytest.fixture(scope="module")
def graded_cases(source_nb):
    """{grade_id: [RowsCase]}: what each graded correctness cell checks."""
    return checked_cases(source_nb, problem2b, ("check_softmax_kernel",), ("triton_softmax",))


def first_failure(fn, cases):
    """A graded cell's outcome, cheaper: None when every case passes, else the first failing case's
    causes (the cell fails exactly when one of its cases does)."""
    for case in cases:
        result = run_kernel_case(fn, case)
        if not result.passed:
            return set(codes(result))
    return None


# --- the reference earns every point --------------------------------------------------------

def test_reference_passes_every_graded_cell_quietly(reference, source_nb, capfd):
    points = {grade_id(c): c.metadata["nbgrader"]["points"] for c in source_nb.cells
              if c.metadata.get("nbgrader", {}).get("grade")}
    assert sum(points.values()) == 12 and points["test_performance"] == 2
    outcome = run_cells(reference, source_nb)
    assert all(passed for passed, _ in outcome.values()), outcome
    assert len(outcome) == 5
    assert capfd.readouterr().err == ""


def test_reference_error_is_far_inside_the_tolerance(reference, runtime):
    """A probability rounded once to float16 is within half a unit (2**-12 relative); the tolerance
    allows about two, and the kernel's float32 work adds nothing visible."""
    for dtype in ("float16", "float32"):
        x = make_logits(RowsCase(8, 300, 64, dtype, seed=5), runtime.device)
        out = reference.triton_softmax(x, 64).double()
        ref = torch.softmax(x.double(), dim=-1)
        tol = problem2b.TOLERANCES[x.dtype]
        assert ((out - ref).abs() - tol.rtol * ref.abs()).max().item() < tol.atol / 2
        assert ((out - ref).abs() / ref).max().item() < tol.rtol / 2


def test_output_perturbed_by_two_units_fails(reference):
    def perturbed(x, block_size):
        y = reference.triton_softmax(x, block_size)
        return (y.float() * (1 + 2 * 2 ** -10)).to(y.dtype)

    assert not run_kernel_case(perturbed, RowsCase(4, 64, 32, "float16")).passed


@pytest.mark.parametrize("bad,message", [
    (lambda x: (x[None], 64), "2-D"), (lambda x: (x.int(), 64), "dtype"),
    (lambda x: (x, 48), "power of two"), (lambda x: (x.tolist(), 64), "torch.Tensor"),
])
def test_bad_input_gets_a_value_error(reference, runtime, bad, message):
    with pytest.raises(ValueError, match=message):
        reference.triton_softmax(*bad(torch.randn(2, 8, device=runtime.device)))


# --- each sample earns its points and names its cause -------------------------------------------

@pytest.mark.parametrize("sample", KERNEL_SAMPLES, ids=lambda s: s.name)
def test_each_sample_earns_its_points_and_names_its_cause(source_nb, graded_cases, sample):
    points = {grade_id(c): c.metadata["nbgrader"]["points"] for c in source_nb.cells
              if c.metadata.get("nbgrader", {}).get("grade")}
    fn = variant(source_nb, sample.edits, name=sample.name).triton_softmax
    outcome = {gid: first_failure(fn, cases) for gid, cases in graded_cases.items()}
    assert sum(points[g] for g, failed in outcome.items() if failed is None) == sample.expected_points, outcome
    failed = [causes for causes in outcome.values() if causes is not None]
    assert failed and all(causes == {sample.expected_cause} for causes in failed), outcome


@pytest.mark.parametrize("sample", KERNEL_SAMPLES, ids=lambda s: s.name)
def test_performance_points_go_to_the_samples_that_pass_the_self_check(source_nb, sample, capsys):
    """The self-check gates the performance points: a sample deserves them exactly when it passes."""
    fn = variant(source_nb, sample.edits, name=sample.name).triton_softmax
    try:
        problem2b.check(fn)
        passed = True
    except CheckFailed:
        passed = False
    assert passed == bool(sample.expected_performance), capsys.readouterr().out


def test_untouched_kernel_says_not_implemented(repo_root, source_nb):
    stub = cell_by_id(read(repo_root / RELEASED), problem2b.SPEC.student_cell).source
    result = run_kernel_case(variant(source_nb, student_code=stub, name="untouched").triton_softmax,
                             RowsCase(3, 100, 32))
    assert codes(result) == ["not_implemented"] and "Traceback" not in "\n".join(result.lines())


# --- the checks: integrity, convention, variants that are right ---------------------------------

def test_builtin_softmax_gets_no_credit():
    result = run_kernel_case(lambda x, block_size: torch.softmax(x, dim=-1), RowsCase(2, 64, 16))
    assert codes(result) == ["no_kernel"] and "softmax" in result.findings[0].message


def test_zeros_for_a_row_of_minus_inf_break_the_convention(reference):
    result = run_kernel_case(lambda x, block_size: reference.triton_softmax(x, block_size).nan_to_num(0.0),
                             RowsCase(4, 96, 32, masked_row=True))
    assert codes(result) == ["masked_row"] and "NaN" in result.findings[0].message


FIRST_M = '    m_i = tl.full([], float("-inf"), tl.float32)'
CORRECT_VARIANTS = {
    # A finite start for the max needs no guard: exp(-inf - (-3e38)) = 0, and a row of -inf stays 0 / 0.
    "finite_initial_max": (
        (FIRST_M, '    m_i = tl.full([], -3.0e38, tl.float32)'),
        ('        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)\n', "        m_safe = m_new\n"),
        ('    m_safe = tl.where(m_i == float("-inf"), 0.0, m_i)', "    m_safe = m_i")),
    "multiply_by_the_inverse_sum": (
        ("        y = tl.exp(x - m_safe) / l_i\n", "        y = tl.exp(x - m_safe) * (1.0 / l_i)\n"),),
}


@pytest.mark.parametrize("name", sorted(CORRECT_VARIANTS))
def test_correct_variants_pass(source_nb, name):
    fn = variant(source_nb, CORRECT_VARIANTS[name], name=name).triton_softmax
    for case in (RowsCase(5, 200, 64, seed=2), RowsCase(6, 200, 32, "float16", window=40, seed=21),
                 RowsCase(4, 96, 32, masked_row=True, seed=23)):
        result = run_kernel_case(fn, case)
        assert result.passed, "\n".join(result.lines())


# --- the re-enactments -------------------------------------------------------------------------

@pytest.mark.parametrize("rows,cols,block", [(3, 1, 16), (4, 200, 64), (5, 64, 64), (6, 200, 32)])
def test_reenactment_without_a_mistake_is_the_softmax(rows, cols, block):
    x = make_logits(RowsCase(rows, cols, window=40, seed=7)).double()
    torch.testing.assert_close(reenact(x, block), torch.softmax(x, dim=-1), atol=1e-12, rtol=1e-12, equal_nan=True)


def test_after_row_reads_the_memory_that_follows_each_row():
    contiguous = make_logits(RowsCase(3, 5, seed=1))
    spill = after_row(contiguous, 2)
    assert torch.equal(spill[:2], contiguous[1:, :2].double()) and spill[2].isnan().all()
    padded = make_logits(RowsCase(3, 5, layout="padded", seed=1))
    base = torch.as_strided(padded, (3, 7), (padded.stride(0), 1))
    # The padding after each row; after the last one, memory past the tensor's last element.
    assert torch.equal(after_row(padded, 2)[:2], base[:2, 5:7].double()) and after_row(padded, 2)[2].isnan().all()
    assert after_row(make_logits(RowsCase(3, 5, layout="transposed")), 2).isnan().all()


def test_tail_other_zero_and_one_pass_are_told_apart_from_the_right_answer():
    x = make_logits(RowsCase(4, 200, seed=3))
    right = torch.softmax(x.double(), dim=-1)
    for fault, tail in (("", 0.0), ("one_pass", None), ("no_l_rescale", None)):
        assert (reenact(x, 64, fault, tail=tail) - right).abs().max() > 1e-3, fault


# --- the graded inputs hold what they claim ------------------------------------------------------

def test_graded_cells_cover_tails_layouts_dtypes_and_one_column(graded_cases):
    cases = [c for found in graded_cases.values() for c in found]
    assert {c.dtype for c in cases} == {"float16", "bfloat16", "float32"}
    assert {c.layout for c in cases} == {"contiguous", "padded", "transposed"}
    assert any(c.cols == 1 for c in cases) and any(c.block_size > c.cols for c in cases)
    assert sum(c.cols % c.block_size != 0 for c in cases) >= 5
    visible = graded_cases["test_full_blocks"] + graded_cases["test_tail_block"]
    assert list(problem2b.SPEC.self_check_cases) == visible  # the self-check is the visible cells' check
    padded = make_logits(next(c for c in cases if c.layout == "padded"))
    transposed = make_logits(next(c for c in cases if c.layout == "transposed"))
    assert padded.stride(0) > padded.shape[1] and transposed.stride(1) == transposed.shape[0]


def test_masked_cells_hold_rows_that_start_with_a_masked_block_and_a_row_of_minus_inf(graded_cases):
    cases = graded_cases["test_hidden_masks"]
    starts_masked = ends_masked = whole_rows = 0
    for case in cases:
        x = make_logits(case)
        neg = x == -math.inf
        starts_masked += int((neg[:, :case.block_size].all(dim=1) & ~neg.all(dim=1)).sum())
        ends_masked += int(neg[:, -case.block_size:].all(dim=1).sum())
        whole_rows += int(neg.all(dim=1).sum())
    assert starts_masked >= 4 and ends_masked >= 4 and whole_rows == 1


def test_large_logits_overflow_a_naive_exp_in_float32(graded_cases):
    cases = graded_cases["test_hidden_large_logits"]
    assert {c.dtype for c in cases} == {"float16", "bfloat16", "float32"}
    for case in cases:
        x = make_logits(case)
        assert torch.isinf(torch.exp(x.float())).any(dim=1).all(), case.label()  # every row overflows


# --- timing, spec, notebook ----------------------------------------------------------------------

def test_timing_plan_times_the_reference_against_itself(reference, runtime):
    plan = TimingPlan(gpu_case=RowsCase(64, 4096, None, "float16"), cpu_case=RowsCase(4, 1024, None, "float16"),
                      cpu_rounds=3, input_sets=2, make_inputs=problem2b.timing_inputs)
    timing = time_against_reference(reference.triton_softmax, reference.triton_softmax, plan, runtime)
    assert 0.5 < timing.ratio < 2 and plan.case(runtime).label() in timing.lines()[0]
    spec_plan = problem2b.SPEC.timing
    assert spec_plan.gpu_case.dtype == spec_plan.cpu_case.dtype == "float16"
    assert spec_plan.gpu_case.rows * spec_plan.gpu_case.cols >= 1 << 26  # 128 MiB each way: past any L2


def test_problem2b_comes_between_problems_2_and_3_and_is_a_triton_problem():
    assert problems.ASSIGNMENTS.index("problem2b") == problems.ASSIGNMENTS.index("problem2") + 1
    assert problems.ASSIGNMENTS.index("problem3") == problems.ASSIGNMENTS.index("problem2b") + 1
    assert sorted(["problem10", "problem2b", "problem2", "problem3"], key=problems.course_order) == \
        ["problem2", "problem2b", "problem3", "problem10"]
    spec = problems.get_spec("problem2b")
    assert spec is problem2b.SPEC and spec.performance_points == 2 and spec.kernel_function == "triton_softmax"


# --- on a GPU ---------------------------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_reference_passes_long_rows_and_reports_bandwidth(reference, source_nb, monkeypatch):
    """Compiled on the GPU: the graded cells, rows far longer than one block at the wrapper's own block,
    and the benchmark (GB/s against torch.softmax and the GPU's bandwidth)."""
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    assert all(passed for passed, _ in run_cells(reference, source_nb).values())
    for case in (RowsCase(64, 10000, None, "float16", seed=1), RowsCase(8, 65536, None, "bfloat16", seed=2),
                 RowsCase(128, 5000, None, "float32", window=700, sink=4, seed=3),
                 RowsCase(300, 3000, None, "float16", "padded", logit_scale=40, seed=4)):
        result = run_kernel_case(reference.triton_softmax, case, device="cuda")
        assert result.passed, "\n".join(result.lines())
    result = problem2b.benchmark(reference.triton_softmax, shapes=((4096, 4096), (1024, 32768)))
    assert result["copy_gbs"] > 100
    # Handed the reference kernel, the benchmark names it so and does not time it twice.
    assert {r["impl"] for r in result["rows"]} == {"reference kernel", "torch.softmax"}
    mine = [r for r in result["rows"] if r["impl"] == "reference kernel"]
    assert len(mine) == 2 and all("gbs" in r and r["max_err"] < 1e-3 for r in mine)


def test_bandwidth_table_and_plot_read_a_benchmark_result(tmp_path):
    """What `python -m autograder bench --problem problem2b` prints and plots, from a result of the
    shape bandwidth_benchmark returns (timed on a GPU only)."""
    result = {"gpu": "NVIDIA H200", "dtype": "float16", "nominal_gbs": 4800.0, "copy_gbs": 4000.0, "rows": [
        {"impl": "reference kernel", "rows": 4096, "cols": 8192, "ms": 0.04, "gbs": 3355.4, "of_copy": 0.84,
         "of_nominal": 0.70, "max_err": 2e-4},
        {"impl": "torch.softmax", "rows": 4096, "cols": 8192, "ms": 0.05, "gbs": 2684.4, "of_copy": 0.67,
         "of_nominal": None, "max_err": 1e-4},
        {"impl": "torch.softmax", "rows": 512, "cols": 131072, "skipped": "OutOfMemoryError: ..."}]}
    table = problem2b.format_bandwidth(result).splitlines()
    assert "nominal bandwidth 4800 GB/s" in table[0] and "copy 4000 GB/s" in table[0]
    assert table[2].split()[-5:] == ["0.0400", "3355", "84%", "70%", "2.0e-04"]
    assert table[3].split()[-3:] == ["67%", "-", "1.0e-04"] and "skipped: OutOfMemoryError" in table[4]
    problem2b.plot_bandwidth(result, tmp_path / "bw.png")
    assert (tmp_path / "bw.png").stat().st_size > 10_000
