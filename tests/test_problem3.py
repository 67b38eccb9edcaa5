"""Problem 3: the reference kernel against the float64 reference on awkward inputs, its online-softmax
mistakes re-enacted and named, its samples, and the problem's spec."""
import pytest
import torch

from autograder import problems
from autograder.checks import TOLERANCES, run_case
from autograder.grading.sample_sets.problem3 import SAMPLES
from autograder.inputs import Case, make_qkv
from autograder.problems import problem3
from autograder.problems.online_softmax_faults import FAULTS, blockwise_attention
from autograder.references import attention_reference
from tests.helpers import codes, kernel_variant

KERNEL_SAMPLES = [s for s in SAMPLES if s.edits]
CASE = Case(1, 2, 200, 64, seed=3)


# --- the reference kernel ----------------------------------------------------------------------

AWKWARD = [
    Case(1, 1, 1, 16, seed=1),
    Case(2, 3, 17, 32, seed=2),
    Case(1, 2, 200, 64, seed=3),
    Case(1, 1, 1000, 128, seed=4),
    Case(3, 2, 128, 64, layout="bshd", seed=5),
    Case(1, 2, 100, 32, layout="strided_d", seed=6),
    Case(1, 2, 130, 64, L_k=70, seed=7),
    Case(1, 2, 64, 16, L_k=300, seed=8),
]


@pytest.mark.parametrize("case", AWKWARD, ids=Case.label)
def test_reference_kernel_passes_awkward_shapes(reference_kernel, runtime, case):
    result = run_case(reference_kernel.flash_attention_forward, case, runtime)
    assert result.passed, "\n".join(result.lines())


@pytest.mark.parametrize("config", [(32, 32, 4, 2), (64, 16, 4, 3)])
def test_wrapper_takes_the_launch_config_and_kernel_body_as_arguments(reference_kernel, runtime, config):
    # What scripts/tune_kernels.py sweeps: other tiles, or the pointer kernel where tensor
    # descriptors would be taken, and the same attention.
    case = Case(1, 2, 100, 32, seed=10)
    fn = reference_kernel.flash_attention_forward
    result = run_case(lambda q, k, v: fn(q, k, v, config=config, tma=False), case, runtime)
    assert result.passed, "\n".join(result.lines())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_reference_kernel_error_is_far_inside_the_tolerance(reference_kernel, runtime, dtype):
    """The tolerance leaves room, but not much: the kernel sits at about a quarter of it."""
    if getattr(torch, dtype) not in runtime.dtypes:
        pytest.skip(f"{dtype} tl.dot is not trustworthy on this runtime")
    case = Case(2, 2, 300, 64, dtype, seed=9)
    q, k, v = make_qkv(case, runtime.device)
    o, _ = reference_kernel.flash_attention_forward(q, k, v)
    ref, _ = attention_reference(q, k, v)
    tol = TOLERANCES[q.dtype]
    err = ((o.double() - ref).abs() - tol.rtol * ref.abs()).max().item()
    assert err < tol.atol / 2


def test_output_perturbed_by_a_few_ulps_fails(reference_kernel, runtime):
    """The check is tight: shifting the right answer by 8 fp16 ulps at 1.0 is caught."""
    def perturbed(q, k, v):
        o, lse = reference_kernel.flash_attention_forward(q, k, v)
        return o + 8 * 2 ** -10, lse

    result = run_case(perturbed, Case(1, 1, 64, 16), runtime)
    assert not result.passed


BAD_INPUTS = [
    ("4 dimensions", lambda q, k, v: (q[0], k, v)),
    ("dtype torch.float32", lambda q, k, v: (q.float(), k, v)),
    ("share one dtype", lambda q, k, v: (q, k.to(torch.bfloat16 if k.dtype == torch.float16 else torch.float16), v)),
    ("same shape", lambda q, k, v: (q, k, v[:, :, :5])),
    ("head dim D=24", lambda q, k, v: (q[..., :24], k[..., :24], v[..., :24])),
    ("equal head counts", lambda q, k, v: (q, k[:, :1], v[:, :1])),
    ("batch", lambda q, k, v: (q, k[:1], v[:1])),
    ("torch.Tensor", lambda q, k, v: (q.tolist(), k, v)),
]


@pytest.mark.parametrize("message,mangle", BAD_INPUTS, ids=[m for m, _ in BAD_INPUTS])
def test_bad_input_gets_a_value_error_naming_the_problem(reference_kernel, runtime, message, mangle):
    q, k, v = make_qkv(Case(2, 2, 16, 32), runtime.device)
    with pytest.raises(ValueError, match=message):
        reference_kernel.flash_attention_forward(*mangle(q, k, v))


def test_cpu_tensors_are_refused_on_a_gpu_runtime(reference_kernel, runtime, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = make_qkv(Case(1, 1, 16, 16), "cpu")
    with pytest.raises(ValueError, match="move them to the GPU"):
        reference_kernel.flash_attention_forward(q, k, v)


@pytest.mark.gpu
@pytest.mark.parametrize("case", [
    Case(2, 3, 1000, 128, "bfloat16", seed=11), Case(4, 16, 4096, 16, "bfloat16", seed=12),
    Case(1, 2, 8192, 64, "bfloat16", "bshd", seed=13), Case(2, 2, 333, 64, "float16", "strided_d", seed=14),
    Case(1, 1, 1, 128, "bfloat16", seed=15), Case(1, 4, 4097, 64, "bfloat16", seed=16),
], ids=Case.label)
def test_gpu_bf16_and_long_sequences(reference_kernel, runtime, case):
    result = run_case(reference_kernel.flash_attention_forward, case, runtime)
    assert result.passed and not result.note, "\n".join(result.lines())


def test_every_output_element_is_written(reference_kernel, runtime, monkeypatch):
    """Poison the output buffers: a row the kernel forgets to store stays NaN."""
    real_empty_like, real_empty = torch.empty_like, torch.empty
    monkeypatch.setattr(torch, "empty_like", lambda t, **kw: real_empty_like(t, **kw).fill_(float("nan")))
    monkeypatch.setattr(torch, "empty", lambda *a, **kw: real_empty(*a, **kw).fill_(float("nan")))
    q, k, v = make_qkv(Case(2, 3, 201, 32, seed=17), runtime.device)
    o, lse = reference_kernel.flash_attention_forward(q, k, v)
    assert bool(torch.isfinite(o).all()) and bool(torch.isfinite(lse).all())


# --- the typical mistakes, named ---------------------------------------------------------------

@pytest.mark.parametrize("sample", KERNEL_SAMPLES, ids=lambda s: s.name)
def test_each_kernel_mistake_is_named(runtime, sample):
    module = kernel_variant(sample.edits, name=sample.name)
    result = run_case(module.flash_attention_forward, CASE, runtime, diagnoses=problem3.DIAGNOSES)
    assert not result.passed
    assert sample.expected_cause in codes(result), "\n".join(result.lines())


def test_untouched_student_cell_says_not_implemented(runtime):
    stub = '''
@triton.jit
def online_softmax_update(acc, l_i, m_i, qk, v, key_idx, seq_len_k, qk_scale, MASK_KEYS: tl.constexpr):
    # YOUR CODE HERE
    raise NotImplementedError()
    return acc, l_i, m_i


@triton.jit
def finalize(acc, l_i, m_i):
    # YOUR CODE HERE
    raise NotImplementedError()
    return o, lse
'''
    module = kernel_variant(student_code=stub, name="untouched")
    result = run_case(module.flash_attention_forward, CASE, runtime)
    assert codes(result) == ["not_implemented"]
    assert "Traceback" not in "\n".join(result.lines())


def test_the_generic_checks_leave_the_online_softmax_mistakes_to_the_problem(runtime):
    """Without problem 3's diagnoses the same wrong kernel gets no online-softmax cause: the
    generic layer knows no problem's mistakes."""
    sample = next(s for s in KERNEL_SAMPLES if s.expected_cause == "no_acc_rescale")
    module = kernel_variant(sample.edits, name=sample.name)
    result = run_case(module.flash_attention_forward, CASE, runtime)
    assert not result.passed and not set(codes(result)) & set(FAULTS)


# --- the float64 re-enactment of the online softmax ---------------------------------------------

def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("length,block", [(1, 16), (17, 16), (64, 64), (200, 64), (130, 32)])
def test_blockwise_online_softmax_is_exact_without_faults(length, block):
    q, k, v = rand(2, 2, length, 32, seed=10), rand(2, 2, length, 32, seed=11), rand(2, 2, length, 32, seed=12)
    out, lse = blockwise_attention(q, k, v, block)
    ref_out, ref_lse = attention_reference(q, k, v)
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(lse, ref_lse, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_every_fault_changes_the_output_where_it_applies(fault):
    q, k, v = rand(1, 2, 200, 32, seed=13), rand(1, 2, 200, 32, seed=14), rand(1, 2, 200, 32, seed=15)
    out, _ = blockwise_attention(q, k, v, 64, {fault})
    ref, _ = attention_reference(q, k, v)
    assert (out - ref).abs().max() > 1e-2


def test_unknown_fault_is_rejected():
    with pytest.raises(ValueError, match="unknown faults"):
        blockwise_attention(rand(1, 1, 4, 16), rand(1, 1, 4, 16), rand(1, 1, 4, 16), 16, {"typo"})


# --- the spec ------------------------------------------------------------------------------------

def test_problem3_spec_is_a_triton_problem_with_performance_points():
    spec = problems.get_spec("problem3")
    assert spec is problem3.SPEC and spec.answer_policy == "triton" and spec.performance_points == 2
    assert spec.student_cell in spec.kernel_cells and spec.kernel_function == "flash_attention_forward"


# --- more mistakes, written as a student writes them, each named --------------------------------

SCORE_LINE = "    m_new = tl.maximum(m_i, tl.max(qk, axis=1) * qk_scale)"
DOT_LINE = "    acc = tl.dot(p.to(v.dtype), v, acc)        # 16-bit operands, float32 accumulation\n"
RESCALE_LINE = "    acc = acc * alpha[:, None]\n"
MISTAKES = {
    "tail_keeps_pad": (("key_idx[None, :] < seq_len_k", "key_idx[None, :] <= seq_len_k"),),
    "tail_drops_last": (("key_idx[None, :] < seq_len_k", "key_idx[None, :] < seq_len_k - 1"),),
    "no_max_update": (("    m_i = m_new\n", ""),),
    "acc_rescale_after_add": ((RESCALE_LINE, ""), (DOT_LINE, DOT_LINE + RESCALE_LINE)),
    "p_unscaled": (("p = tl.math.exp2(qk * qk_scale - m_new[:, None])", "p = tl.math.exp2(qk - m_new[:, None])"),),
    "rowsum_scores": (("tl.sum(p, axis=1)", "tl.sum(qk, axis=1)"),),
    "scale_twice": ((SCORE_LINE, "    qk = qk * qk_scale\n" + SCORE_LINE),),
}


@pytest.mark.parametrize("cause", sorted(MISTAKES))
def test_each_written_mistake_gets_its_cause(runtime, cause):
    module = kernel_variant(MISTAKES[cause], name=cause)
    # Several key blocks at every block size a device picks (64 under the interpreter, up to 128 on
    # a GPU): with a single block, a running max never updated or a rescale misplaced changes nothing.
    for case in (CASE, Case(1, 2, 256, 64, seed=4)):
        if cause.startswith("tail_") and case.L % 64 == 0:
            continue  # whole blocks: the kernel masks nothing, the mistake does not show
        result = run_case(module.flash_attention_forward, case, runtime, diagnoses=problem3.DIAGNOSES,
                          lse_diagnoses=problem3.LSE_DIAGNOSES, fresh_call=True)
        # With a partial block the row sums include its -inf scores: l_i = -inf, an all-zero output.
        want = "all_zero" if cause == "rowsum_scores" and case.L % 64 else cause
        assert not result.passed and codes(result) == [want], "\n".join(result.lines())


def test_an_lse_built_from_the_wrong_max_is_named(runtime):
    module = kernel_variant((("lse = (m_i + tl.math.log2(l_i)) * LN_2", "lse = m_i + tl.math.log2(l_i) * LN_2"),),
                            name="lse_wrong_max")
    result = run_case(module.flash_attention_forward, CASE, runtime, diagnoses=problem3.DIAGNOSES,
                      lse_diagnoses=problem3.LSE_DIAGNOSES)
    assert not result.passed and codes(result) == ["lse_wrong_max"], "\n".join(result.lines())
    assert "base-2" in result.findings[0].message


@pytest.mark.parametrize("cause,case", [("acc_rescale_after_add", Case(1, 1, 1, 64, seed=10)),
                                        ("rowsum_scores", Case(1, 1, 1, 64, seed=10)),
                                        ("acc_rescale_after_add", Case(1, 2, 256, 64)),
                                        ("rowsum_scores", Case(1, 2, 256, 64))])
def test_honest_mistakes_are_never_called_a_cached_result(runtime, cause, case):
    """Both give an output that ignores the inputs on some shapes (all zeros): a bug, not a cheat."""
    module = kernel_variant(MISTAKES[cause], name=cause)
    result = run_case(module.flash_attention_forward, case, runtime, diagnoses=problem3.DIAGNOSES, fresh_call=True)
    assert not result.passed and "cached_output" not in codes(result), "\n".join(result.lines())
    assert codes(result) == [cause if case.L > 1 else "all_zero"], "\n".join(result.lines())


def test_a_real_cache_is_still_caught(reference_kernel, runtime):
    first = {}

    def cached(q, k, v):
        return first.setdefault("answer", reference_kernel.flash_attention_forward(q, k, v))

    result = run_case(cached, Case(1, 2, 128, 64), runtime, diagnoses=problem3.DIAGNOSES, fresh_call=True)
    assert codes(result) == ["cached_output"]


MASK_BLOCK = ("    if MASK_KEYS:\n        # Padded keys were loaded as zeros, which would score 0, not -inf.\n"
              "        qk = tl.where(")
CORRECT_VARIANTS = {
    "scale_first": ((SCORE_LINE, "    qk = qk * qk_scale\n    m_new = tl.maximum(m_i, tl.max(qk, axis=1))"),
                    ("p = tl.math.exp2(qk * qk_scale - m_new[:, None])", "p = tl.math.exp2(qk - m_new[:, None])")),
    "large_negative_mask": (('qk, float("-inf"))', "qk, -1.0e30)"),),
    "mask_every_block": ((MASK_BLOCK, "    qk = tl.where("),),
    "normalised_every_step": (
        ("    l_i = l_i * alpha + tl.sum(p, axis=1)\n" + RESCALE_LINE + DOT_LINE,
         "    l_new = l_i * alpha + tl.sum(p, axis=1)\n    acc = acc * (l_i * alpha / l_new)[:, None]\n"
         "    acc = tl.dot((p / l_new[:, None]).to(v.dtype), v, acc)\n    l_i = l_new\n"),
        ("    o = acc / l_i[:, None]\n", "    o = acc\n")),
}


@pytest.mark.parametrize("name", sorted(CORRECT_VARIANTS))
def test_correct_variants_pass(runtime, name):
    module = kernel_variant(CORRECT_VARIANTS[name], name=name)
    for case in (CASE, Case(1, 2, 128, 64, seed=4), Case(1, 1, 1, 64, seed=10), Case(1, 2, 130, 64, L_k=70, seed=15)):
        result = run_case(module.flash_attention_forward, case, runtime, diagnoses=problem3.DIAGNOSES, fresh_call=True)
        assert result.passed, "\n".join(result.lines())


# Mutations that are none of the named mistakes: no re-enactment may claim them on thin evidence
# (a 0/0 re-enactment, or an output where every row overflows).
NOT_A_NAMED_MISTAKE = {
    "mask_flipped": ((("key_idx[None, :] < seq_len_k", "key_idx[None, :] > seq_len_k"),),
                     Case(1, 1, 1, 16, seed=40), False),
    "max_divided_by_scale": ((("tl.max(qk, axis=1) * qk_scale", "tl.max(qk, axis=1) / qk_scale"),), CASE, True),
}


@pytest.mark.parametrize("name", sorted(NOT_A_NAMED_MISTAKE))
def test_a_different_mistake_is_not_misnamed(runtime, name):
    edits, case, check_output = NOT_A_NAMED_MISTAKE[name]
    module = kernel_variant(edits, name=name)
    result = run_case(module.flash_attention_forward, case, runtime, check_output=check_output,
                      diagnoses=problem3.DIAGNOSES, lse_diagnoses=problem3.LSE_DIAGNOSES)
    assert not result.passed and not set(codes(result)) & {"tail_drops_last", "p_unscaled"}, \
        "\n".join(result.lines())
