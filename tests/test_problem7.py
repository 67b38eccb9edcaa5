"""Problem 7 (the backward): the reference passes every graded cell, each sample's mistake is named
with the points it deserves, the float64 re-enactment of the backward is exact and each of its
mistakes is named, the gradient check is tight and says which gradient is wrong
(the notebooks themselves: tests/test_notebooks.py)."""
import ast
import math

import pytest
import torch

from autograder import benchmark as bench
from autograder.checks import GRAD_TOLERANCES, run_grad_case
from autograder.grading.sample_sets.problem7 import SAMPLES
from autograder.inputs import Case, make_grad, make_qkv
from autograder.notebook_code import cell_by_id, read
from autograder.problems import problem7, reference_module
from autograder.references import attention_grads_reference, attention_reference
from tests.helpers import codes, graded_cells, kernel_module, run_graded_cell, run_printing_check

SOURCE = "solutions/problem7/problem7.ipynb"
RELEASED = "notebooks/problem7/problem7.ipynb"
CAUSAL_CASE = Case(1, 2, 80, 16, seed=2, causal=True)


@pytest.fixture(scope="module")
def source_nb(repo_root):
    return read(repo_root / SOURCE)


@pytest.fixture(scope="module")
def reference(repo_root):
    return reference_module(problem7.SPEC, repo_root)


def variant(source_nb, edits=(), student_code=None, name="variant"):
    return kernel_module(problem7, source_nb, edits, student_code, name=name)


def graded_value_cases():
    """{grade id: the cases its assert_backward_cases call checks}, read from the source notebook."""
    found = {}
    for gid, code in graded_cells(SOURCE, performance=False):
        call = next(n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call)
                    and getattr(n.func, "id", "") == "assert_backward_cases")
        found[gid] = eval(compile(ast.Expression(call.args[1]), gid, "eval"), {"Case": Case})
    return found


# ---- the reference passes every graded cell, hidden ones included (as the judge runs them) ----

@pytest.mark.parametrize("test_id", [t for t, _ in graded_cells(SOURCE)])
def test_reference_passes_graded_cell(reference, test_id, capsys):
    code = dict(graded_cells(SOURCE))[test_id]
    run_graded_cell(reference, test_id, code)
    out = capsys.readouterr().out
    if test_id == "test_performance":
        assert "earns 100% of 2 points" in out, out
    else:
        assert "FAIL" not in out and "All" in out and "cases passed" in out, out


def test_graded_cases_cover_what_the_chapter_promises():
    cases = [c for cs in graded_value_cases().values() for c in cs]
    lengths = {c.L for c in cases}
    assert 1 in lengths and any(n % 16 for n in lengths) and any(n > 32 for n in lengths)
    assert {c.D for c in cases} == {16, 32, 64, 128}
    assert {c.dtype for c in cases} == {"float16", "bfloat16", "float32"}
    assert {c.layout for c in cases} == {"contiguous", "bshd", "strided_d"}
    assert {c.grad_layout for c in cases} >= {"bshd", "strided_d"}
    assert {c.causal for c in cases} == {False, True} and any(c.B > 1 and c.H > 1 for c in cases)


def test_the_sample_scores_add_up(source_nb):
    """The points each sample deserves follow from which cells hold which cases: every cell has a
    case longer than one token (where Delta and the scale matter); every cell but test_noncausal has
    a causal one (where the recompute's mask matters)."""
    points = {gid: cell_by_id(source_nb, gid).metadata.nbgrader.points for gid, _ in graded_cells(SOURCE)}
    assert sum(points.values()) == 12 and points["test_performance"] == 2
    cases = graded_value_cases()
    assert all(any(c.L > 1 for c in cs) for cs in cases.values())
    without_causal = [gid for gid, cs in cases.items() if not any(c.causal and c.L > 1 for c in cs)]
    assert without_causal == ["test_noncausal"]
    by_name = {s.name: s for s in SAMPLES}
    assert by_name["no_recompute_mask"].expected_points == points["test_noncausal"]
    assert all(s.expected_points == 0 for s in SAMPLES if s.edits and s.name != "no_recompute_mask")
    assert [s.name for s in SAMPLES][:3] == ["correct", "untouched", "no_recompute_mask"]


# ---- each sample's mistake is named, in-process ----

@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.edits], ids=lambda s: s.name)
def test_each_sample_mistake_is_named(runtime, source_nb, sample):
    fn = variant(source_nb, sample.edits, name=sample.name).flash_attention_grads
    result = run_grad_case(fn, CAUSAL_CASE, runtime, diagnoses=problem7.backward_diagnoses(fn))
    assert not result.passed and codes(result) == [sample.expected_cause], "\n".join(result.lines())


TEXTBOOK = "scripts/answers/problem7_textbook.txt"


@pytest.mark.parametrize("test_id", ["test_noncausal", "test_causal"])
def test_the_textbook_answer_passes_too(repo_root, source_nb, test_id, capsys):
    """The reference computes dK/dV on transposed tiles; an answer built on recompute_p and
    score_grad with (queries, keys) tiles, as the chapter first asks, passes the same cells."""
    textbook = (repo_root / TEXTBOOK).read_text()
    assert "p = recompute_p(" in textbook.split("def dkdv_update")[1].split("def dq_update")[0]
    module = variant(source_nb, student_code=textbook, name="textbook_" + test_id)
    passed, _, out = run_printing_check(
        lambda: run_graded_cell(module, test_id, dict(graded_cells(SOURCE))[test_id]), capsys)
    assert passed, out


def test_a_mask_missing_only_in_the_recompute_passes_non_causal_cells(reference, source_nb, capsys):
    sample = next(s for s in SAMPLES if s.name == "no_recompute_mask")
    module = variant(source_nb, sample.edits, name="no_recompute_mask_graded")
    passed, _, out = run_printing_check(
        lambda: run_graded_cell(module, "test_noncausal", dict(graded_cells(SOURCE))["test_noncausal"]), capsys)
    assert passed, out


def test_the_verdict_says_which_gradient_is_wrong_and_where(runtime, source_nb):
    sample = next(s for s in SAMPLES if s.name == "dk_no_scale")
    fn = variant(source_nb, sample.edits, name="dk_where").flash_attention_grads
    result = run_grad_case(fn, Case(1, 1, 40, 16, seed=5), runtime, diagnoses=problem7.backward_diagnoses(fn))
    assert result.summary.startswith("dK max|err|") and "(dQ, dV right)" in result.summary, result.summary
    assert result.where.startswith("dK first at batch 0, head 0, key "), result.where


def test_untouched_cell_says_not_implemented(repo_root, runtime, source_nb):
    stub = cell_by_id(read(repo_root / RELEASED), problem7.SPEC.student_cell).source
    fn = variant(source_nb, student_code=stub, name="untouched").flash_attention_grads
    result = run_grad_case(fn, Case(1, 1, 40, 16), runtime)
    assert codes(result) == ["not_implemented"] and "Traceback" not in "\n".join(result.lines())


# ---- the float64 re-enactment ----

def _float64_inputs(case):
    q, k, v = make_qkv(case)
    return q, k, v, make_grad(case)


@pytest.mark.parametrize("causal", [False, True])
def test_reenactment_without_mistakes_is_float64_autograd(causal):
    q, k, v, do = _float64_inputs(Case(2, 2, 45, 16, seed=6, causal=causal))
    want = attention_grads_reference(q, k, v, do, is_causal=causal)
    for got, ref in zip(problem7.reenact_backward(q, k, v, do, causal), want, strict=True):
        torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("code", sorted(problem7.MISTAKES))
def test_each_reenacted_mistake_changes_the_gradients_and_is_named(reference, code):
    """A function whose gradients are exactly a re-enacted mistake (rounded to float16, as a kernel's
    are) gets that mistake's name, and no switch of the re-enactment is a no-op."""
    case = Case(1, 2, 70, 32, seed=7, causal=True)
    q, k, v, do = _float64_inputs(case)
    switches = dict(problem7.MISTAKES[code][0])
    for key in ("dq_factor", "dk_factor"):
        if key in switches:
            switches[key] = problem7._factor(switches[key], 32)
    sim = problem7.reenact_backward(q, k, v, do, True, problem7.tile_sizes(reference.flash_attention_grads, q),
                                    **switches)
    ref = dict(zip(("dq", "dk", "dv"), attention_grads_reference(q, k, v, do, is_causal=True), strict=True))
    got = {name: g.to(torch.float16).double() for name, g in zip(("dq", "dk", "dv"), sim, strict=True)}
    assert any((got[n] - ref[n]).abs().max() > 0.1 for n in got)
    found = problem7.backward_diagnoses(reference.flash_attention_grads)[0](got, q, k, v, do, ref, case)
    assert [f.code for f in found] == [code], found


@pytest.mark.parametrize("delta", ["tl.sum(o.to(tl.float32) / do.to(tl.float32), axis=1)",
                                   "tl.sum(o.to(tl.float32) * do.to(tl.float32) * o.to(tl.float32), axis=1)",
                                   "tl.sum(do.to(tl.float32) * do.to(tl.float32), axis=1)"],
                         ids=["o_over_do", "o_squared_do", "do_squared"])
def test_any_wrong_delta_is_named_from_the_gradients(runtime, source_nb, delta):
    """A Delta that none of the re-enactments computes (the H200 mutation run's `o / do`, a product
    with O twice, dO with itself) is still named: dV is right and dQ, dK fit one wrong number per row."""
    edit = ("delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)", f"delta = {delta}")
    fn = variant(source_nb, (edit,), name="wrong_delta").flash_attention_grads
    result = run_grad_case(fn, Case(1, 2, 80, 16, "float32", seed=2, causal=True), runtime,
                           diagnoses=problem7.backward_diagnoses(fn))
    assert not result.passed and codes(result) == ["delta_wrong"], "\n".join(result.lines())
    assert "Delta_i = sum_d O_id dO_id" in result.reason


def test_delta_added_instead_of_subtracted_is_named(runtime, source_nb):
    """dS = P * (dP + Delta), in score_grad and in the transposed line: a Delta of the opposite sign."""
    edits = (("ds = p * (dp - delta[:, None])", "ds = p * (dp + delta[:, None])"),
             ("ds_t = p_t * (dp_t - delta[None, :])", "ds_t = p_t * (dp_t + delta[None, :])"))
    fn = variant(source_nb, edits, name="delta_sign").flash_attention_grads
    result = run_grad_case(fn, CAUSAL_CASE, runtime, diagnoses=problem7.backward_diagnoses(fn))
    assert not result.passed and codes(result) == ["delta_sign"], "\n".join(result.lines())


def test_a_wrong_dk_alone_is_not_called_a_wrong_delta(reference, runtime):
    """dK off by a pattern no single per-row Delta makes (here: dK of the reference with one key's
    row negated) keeps the generic verdict: the fit of Delta must explain dQ and dK together."""
    def one_row_negated(q, k, v, do, causal=False):
        dq, dk, dv = reference.flash_attention_grads(q, k, v, do, causal=causal)
        dk = dk.clone()
        dk[:, :, 3] = -dk[:, :, 3]
        return dq, dk, dv
    result = run_grad_case(one_row_negated, Case(1, 1, 40, 16, seed=8, causal=True), runtime,
                           diagnoses=problem7.backward_diagnoses(reference.flash_attention_grads))
    assert not result.passed and "delta_wrong" not in codes(result), result.reason


def test_a_gradient_off_by_another_factor_gets_the_generic_cause(reference, runtime):
    def doubled_dv(q, k, v, do, causal=False):
        dq, dk, dv = reference.flash_attention_grads(q, k, v, do, causal=causal)
        return dq, dk, dv * 2
    result = run_grad_case(doubled_dv, Case(1, 1, 40, 16, seed=8), runtime,
                           diagnoses=problem7.backward_diagnoses(reference.flash_attention_grads))
    assert codes(result) == ["grad_scaled"] and "dV is the right dV times 2" in result.reason, result.reason


# ---- the check is tight, and cannot be answered by PyTorch ----

def test_reference_error_is_far_inside_the_tolerance(reference, runtime):
    """Measured: the reference kernels stay under a third of the tolerance (docs/backward-tolerances.md)."""
    for case in (Case(1, 2, 80, 32, seed=9), Case(1, 2, 80, 64, seed=9, causal=True)):
        q, k, v = make_qkv(case, runtime.device)
        do = make_grad(case, runtime.device)
        got = reference.flash_attention_grads(q, k, v, do, causal=case.causal)
        tol = GRAD_TOLERANCES[q.dtype]
        for g, r in zip(got, attention_grads_reference(q, k, v, do, is_causal=case.causal), strict=True):
            assert float(((g.double() - r).abs() / (1 + r.abs())).max()) < tol.atol / 3


def test_gradients_perturbed_by_a_few_ulps_fail(reference, runtime):
    def perturbed(q, k, v, do, causal=False):
        dq, dk, dv = reference.flash_attention_grads(q, k, v, do, causal=causal)
        return dq, dk + 32 * 2 ** -10, dv
    result = run_grad_case(perturbed, Case(1, 1, 32, 16), runtime)
    assert not result.passed and "dK" in result.summary and "(dQ, dV right)" in result.summary


def test_pytorch_autograd_is_not_a_kernel(runtime):
    def borrowed(q, k, v, do, causal=False):
        q, k, v = (t.detach().float().requires_grad_() for t in (q, k, v))
        o = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v
        return tuple(g.to(do.dtype) for g in torch.autograd.grad(o, (q, k, v), do.float()))
    result = run_grad_case(borrowed, Case(1, 1, 16, 16), runtime)
    assert codes(result) == ["no_kernel"]


def test_a_wrong_return_value_is_named(reference, runtime):
    result = run_grad_case(lambda q, k, v, do, causal=False: reference.flash_attention_grads(q, k, v, do)[:2],
                           Case(1, 1, 16, 16), runtime)
    assert codes(result) == ["bad_return"] and "(dq, dk, dv)" in result.reason


def test_loss_backward_runs_the_kernels(reference, runtime):
    """The autograd.Function: `loss.backward()` fills .grad with the kernels' gradients."""
    case = Case(1, 2, 40, 32, seed=11, causal=True)
    q, k, v = (t.requires_grad_() for t in make_qkv(case, runtime.device))
    do = make_grad(case, runtime.device)
    o = reference.flash_attention(q, k, v, True)
    ref_o, _ = attention_reference(q.detach(), k.detach(), v.detach(), is_causal=True)
    assert float((o.detach().double() - ref_o).abs().max()) < 2e-3
    (o * do).sum().backward()
    for t, r in zip((q, k, v), attention_grads_reference(q, k, v, do, is_causal=True), strict=True):
        assert float(((t.grad.double() - r).abs() / (1 + r.abs())).max()) < GRAD_TOLERANCES[q.dtype].atol


def test_timing_calls_the_backward_with_its_upstream_gradient_and_sees_extra_work(reference):
    """The timing plan hands (q, k, v, do), `causal` and `deterministic` to the function; a backward
    doing its work twice earns no performance points, one whose dQ is off at the timed shape earns
    none either."""
    from autograder.checks import CheckFailed
    from autograder.performance import band_share, time_against_reference

    fn = reference.flash_attention_grads

    def twice(q, k, v, do, **kwargs):
        fn(q, k, v, do, **kwargs)
        return fn(q, k, v, do, **kwargs)
    timing = time_against_reference(twice, fn, problem7.SPEC.timing)
    assert timing.ratio > 1.6 and band_share(timing.ratio) == 0.0, timing.lines()

    def off(q, k, v, do, **kwargs):
        dq, dk, dv = fn(q, k, v, do, **kwargs)
        return dq + 0.05, dk, dv
    with pytest.raises(CheckFailed, match="differs from the reference kernel"):
        time_against_reference(off, fn, problem7.SPEC.timing)


def test_backward_flops_are_two_and_a_half_forwards():
    assert problem7.backward_flops(4, 16, 4096, 64) == 2.5 * 4 * 4 * 16 * 4096 ** 2 * 64
    assert problem7.backward_flops(1, 1, 100, 64, causal=True) == problem7.backward_flops(1, 1, 100, 64) / 2


def test_benchmark_table_and_plot_from_rows(tmp_path, capsys):
    rows = [{"impl": name, "B": 4, "H": 16, "L": 4096, "D": 64, "causal": True, "dtype": "bfloat16",
             "fwd_bwd_ms": both, "bwd_ms": backward, "fwd_bwd_tflops": 1.0, "bwd_tflops": 2.0}
            for name, both, backward in (("your kernels", 2.0, 1.0), ("SDPA FLASH_ATTENTION", 2.6, 1.5))]
    rows.append({**rows[0], "impl": "SDPA CUDNN_ATTENTION", "skipped": "RuntimeError: no kernel"})
    table = problem7.format_table(rows)
    assert table.splitlines()[1].split()[-2:] == ["1.30x", "1.50x"]   # fwd+bwd, then backward, over flash's
    assert "skipped: RuntimeError" in table
    bench.plot_backward(rows, tmp_path / "p7.png")
    assert (tmp_path / "p7.png").stat().st_size > 1000


def test_benchmark_explains_why_it_does_nothing_on_the_cpu(reference, runtime, capsys, monkeypatch):
    monkeypatch.setenv("COURSE_GRADING", "1")
    assert problem7.benchmark(reference.flash_attention) is None
    assert "skipped while grading" in capsys.readouterr().out
    if runtime.interpreter:
        monkeypatch.delenv("COURSE_GRADING")
        assert problem7.benchmark(reference.flash_attention) is None
        assert "No GPU here" in capsys.readouterr().out


def test_the_spec_says_the_function_returns_gradients():
    spec = problem7.SPEC
    assert spec.direction == "backward" and spec.kernel_function == "flash_attention_grads"
    assert spec.performance_points == 2 and spec.timing.make_inputs is not None


# ---- on a GPU: bfloat16, long sequences, every head dimension ----

GPU_CASES = [Case(2, 3, 1000, 64, "bfloat16", seed=60), Case(2, 3, 1000, 64, "bfloat16", seed=61, causal=True),
             Case(1, 2, 4097, 128, "bfloat16", "bshd", seed=62, causal=True),
             Case(1, 2, 4096, 128, "float16", seed=63), Case(4, 16, 2048, 64, "bfloat16", seed=64, causal=True),
             Case(1, 4, 777, 16, "bfloat16", "strided_d", grad_layout="bshd", seed=65, causal=True),
             Case(1, 2, 1500, 32, "float32", seed=66, causal=True), Case(1, 1, 1, 128, "bfloat16", seed=67),
             Case(1, 2, 1000, 128, "float32", seed=69, causal=True)]


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: c.label())
def test_gpu_bf16_and_long_sequences(reference, runtime, case):
    fn = reference.flash_attention_grads
    result = run_grad_case(fn, case, runtime, diagnoses=problem7.backward_diagnoses(fn))
    assert result.passed and not result.note, "\n".join(result.lines())


@pytest.mark.gpu
def test_gpu_sample_mistakes_are_named(source_nb, runtime):
    case = Case(1, 2, 500, 64, "bfloat16", seed=68, causal=True)
    for sample in (s for s in SAMPLES if s.edits):
        fn = variant(source_nb, sample.edits, name=f"gpu_{sample.name}").flash_attention_grads
        result = run_grad_case(fn, case, runtime, diagnoses=problem7.backward_diagnoses(fn))
        assert codes(result) == [sample.expected_cause], "\n".join(result.lines())


# ---- the descriptor kernels (Hopper, large inputs) ----

@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_descriptor_kernels_compute_what_the_pointer_kernels_do(reference, runtime, causal):
    """The forward and backward with their streamed tiles fetched through tensor descriptors give the
    pointer kernels' o, lse and gradients bit for bit under the CPU interpreter, rows past the end
    (zeros either way) included. On a GPU the next test checks them against float64."""
    if not runtime.interpreter:
        pytest.skip("bit for bit only under the interpreter; on a GPU, see test_gpu_descriptor_kernels")
    case = Case(2, 2, 47, 32, seed=80, causal=causal)
    q, k, v = make_qkv(case)
    do = make_grad(case)
    config = reference.launch_config(q, causal)
    runs = []
    for tma in (False, True):
        o, lse = reference.attention_forward(q, k, v, causal, config=config, tma=tma)
        runs.append((o, lse, *reference.attention_backward(q, k, v, o, lse, do, causal, config=config, tma=tma,
                                                           dq_atomics=False)))
    for name, pointer, descriptor in zip(("o", "lse", "dq", "dk", "dv"), *runs, strict=True):
        assert torch.equal(pointer, descriptor), name


def test_descriptors_only_where_the_gpu_work_hides_their_host_cost(reference, monkeypatch):
    """Encoding a descriptor costs the host time at every launch: on Hopper the wrapper takes the
    descriptor kernels (and their tiles) only for 16-bit inputs of at least _TMA_MIN_WORK."""
    monkeypatch.setattr(reference, "is_hopper_or_newer", lambda t: True)

    def large(shape, causal, dtype=torch.bfloat16):
        return reference._large_on_hopper(torch.empty(shape, dtype=dtype, device="meta"), causal)

    assert large((4, 16, 4096, 64), causal=False) and large((4, 16, 4096, 64), causal=True)  # 2^36, 2^35
    assert not large((4, 16, 2048, 64), causal=False)    # 2^34
    assert not large((16, 12, 1024, 64), causal=True)    # GPT-2 small's training step: host-bound
    assert not large((4, 16, 4096, 64), False, torch.float32)
    monkeypatch.setattr(reference, "is_hopper_or_newer", lambda t: False)
    assert not large((4, 16, 16384, 128), causal=False)


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: c.label())
def test_gpu_descriptor_kernels(reference, runtime, case, monkeypatch):
    """Every GPU case with the Hopper path forced (descriptors and Hopper tiles from the first byte of
    work): contiguous 16-bit inputs take the descriptor kernels, the others the pointer kernels with
    the Hopper tiles."""
    import torch.cuda

    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("tensor descriptors need a Hopper GPU or newer")
    monkeypatch.setattr(reference, "_TMA_MIN_WORK", 0)
    fn = reference.flash_attention_grads
    result = run_grad_case(fn, case, runtime, diagnoses=problem7.backward_diagnoses(fn))
    assert result.passed and not result.note, "\n".join(result.lines())


# ---- the one kernel that adds dQ up by atomics (Hopper, long sequences, D <= 64) ----

ATOMIC_CASES = [Case(2, 2, 47, 32, seed=81), Case(1, 3, 100, 16, seed=82, causal=True),
                Case(1, 2, 64, 64, layout="bshd", grad_layout="strided_d", seed=83, causal=True)]


@pytest.mark.parametrize("case", ATOMIC_CASES, ids=lambda c: c.label())
def test_the_atomic_dq_kernel_matches_float64(reference, runtime, case):
    """The one-kernel backward (dQ added into a float32 buffer by atomics; on the CPU and below the
    descriptors' size element by element) against float64 autograd, tails and strides included."""
    def grads(q, k, v, do, causal=False):
        o, lse = reference.attention_forward(q, k, v, causal)
        return reference.attention_backward(q, k, v, o, lse, do, causal, dq_atomics=True)

    result = run_grad_case(grads, case, runtime, diagnoses=problem7.backward_diagnoses(grads))
    assert result.passed and not result.note, "\n".join(result.lines())


def test_dq_atomics_only_on_the_descriptor_path_at_small_d_unless_deterministic(reference):
    q64, q128 = (torch.empty((4, 16, 16384, d), dtype=torch.bfloat16, device="meta") for d in (64, 128))
    assert reference._dq_atomics(q64, tma=True) and not reference._dq_atomics(q64, tma=False)
    assert not reference._dq_atomics(q128, tma=True)      # the two kinds of program are as fast there
    assert not reference._dq_atomics(q64, tma=True, deterministic=True)
    torch.use_deterministic_algorithms(True)
    try:
        assert not reference._dq_atomics(q64, tma=True)
        assert reference._dq_atomics(q64, tma=True, deterministic=False)
    finally:
        torch.use_deterministic_algorithms(False)


def test_the_autograd_function_passes_deterministic_to_the_backward(reference, runtime, monkeypatch):
    asked = []
    real = reference._dq_atomics

    def spy(q, tma, deterministic=None):
        asked.append(deterministic)
        return real(q, tma, deterministic)
    monkeypatch.setattr(reference, "_dq_atomics", spy)
    q, k, v = make_qkv(CAUSAL_CASE, device=runtime.device)
    do = make_grad(CAUSAL_CASE, device=runtime.device)
    for deterministic in (None, True, False):
        reference.flash_attention_grads(q, k, v, do, causal=True, deterministic=deterministic)
    assert asked == [None, True, False]


def test_the_atomic_dq_experiment_computes_the_gradients(reference, runtime, repo_root):
    """scripts/atomic_dq_experiment.py (docs/results/h200/problem7, "An experiment") stays right: its
    one-kernel backward with dQ by per-element atomics matches float64 autograd under the interpreter."""
    import importlib.util

    if not runtime.interpreter:
        pytest.skip("the experiment's GPU run checks itself (scripts/atomic_dq_experiment.py OUTDIR)")
    spec = importlib.util.spec_from_file_location("atomic_dq_experiment",
                                                  repo_root / "scripts" / "atomic_dq_experiment.py")
    experiment = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(experiment)
    experiment.check_on_the_interpreter(reference)

