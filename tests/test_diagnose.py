"""Each kind of misbehaviour gets a failing verdict with a likely cause, never a crash."""
import time

import pytest
import torch

from autograder.checks import CheckFailed, assert_cases, run_case, stderr_to_stdout
from autograder.inputs import Case
from tests.helpers import codes


def test_wrong_head_offset_is_recognised(reference_kernel, runtime):
    def swapped_heads(q, k, v):
        o, lse = reference_kernel.flash_attention_forward(q, k, v)
        return o.flip(1).contiguous(), lse

    result = run_case(swapped_heads, Case(1, 2, 64, 32), runtime)
    assert codes(result) == ["wrong_indexing"]


def test_nan_output_is_reported(reference_kernel, runtime):
    def nan_rows(q, k, v):
        o, lse = reference_kernel.flash_attention_forward(q, k, v)
        o[:, :, 5] = float("nan")
        return o, lse

    result = run_case(nan_rows, Case(1, 1, 64, 16), runtime)
    assert codes(result) == ["some_nan"] and "row 5" in result.findings[0].message


def test_base2_lse_is_recognised(reference_kernel, runtime):
    def base2(q, k, v):
        o, lse = reference_kernel.flash_attention_forward(q, k, v)
        return o, lse * 1.4426950408889634

    result = run_case(base2, Case(1, 1, 64, 16), runtime, check_output=False)
    assert codes(result) == ["lse_base2"]


def test_sdpa_instead_of_a_kernel_gets_no_credit(runtime):
    def sdpa(q, k, v):
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return o, torch.zeros(q.shape[:-1])

    result = run_case(sdpa, Case(1, 1, 64, 16), runtime)
    assert codes(result) == ["no_kernel"] and "scaled_dot_product" in result.findings[0].message


def test_plain_pytorch_softmax_attention_gets_no_credit(runtime):
    def manual(q, k, v):
        p = torch.softmax(q.float() @ k.float().transpose(-1, -2) / 4, dim=-1)
        return (p @ v.float()).to(q.dtype), torch.zeros(q.shape[:-1])

    assert codes(run_case(manual, Case(1, 1, 64, 16), runtime)) == ["no_kernel"]


def test_writing_into_the_inputs_is_caught(reference_kernel, runtime):
    def mutating(q, k, v):
        out = reference_kernel.flash_attention_forward(q, k, v)
        k.mul_(2)
        return out

    assert codes(run_case(mutating, Case(1, 1, 64, 16), runtime)) == ["mutated_inputs"]


@pytest.mark.parametrize("returned,expect", [
    (lambda q: q, "returned one tensor"),
    (lambda q: (q[..., :8], q[..., 0]), "o has shape"),
    (lambda q: (q.float(), q[..., 0]), "o has dtype"),
    (lambda q: None, "returned NoneType"),
])
def test_wrong_return_values_are_named(reference_kernel, runtime, returned, expect):
    def fn(q, k, v):
        reference_kernel.flash_attention_forward(q, k, v)
        return returned(q)

    result = run_case(fn, Case(1, 1, 64, 16), runtime)
    assert codes(result) == ["bad_return"] and expect in result.findings[0].message


def test_a_raising_function_gets_a_verdict_not_a_crash(runtime):
    def broken(q, k, v):
        raise IndexError("list index out of range")

    result = run_case(broken, Case(1, 1, 64, 16), runtime)
    assert codes(result) == ["raised"] and "IndexError" in result.findings[0].message


def test_a_function_that_never_returns_times_out(runtime):
    def endless(q, k, v):
        while True:
            time.sleep(0.01)

    start = time.monotonic()
    result = run_case(endless, Case(1, 1, 64, 16), runtime, timeout_s=1)
    assert codes(result) == ["timeout"] and time.monotonic() - start < 10


def test_assert_cases_raises_a_short_check_failure(runtime):
    def broken(q, k, v):
        raise RuntimeError("boom")

    with pytest.raises(CheckFailed) as info:
        assert_cases(broken, [Case(1, 1, 16, 16)])
    assert info.value._render_traceback_() == [f"CheckFailed: {info.value.message}"]
    assert "boom" in info.value.message


def test_stderr_is_redirected_at_python_and_fd_level(capfd):
    import os
    import sys
    import warnings

    with stderr_to_stdout():
        print("python-level", file=sys.stderr)
        os.write(2, b"fd-level\n")
        warnings.warn("a warning", stacklevel=1)  # where it is raised is irrelevant here
    out, err = capfd.readouterr()
    assert err == ""
    assert "python-level" in out and "fd-level" in out and "a warning" in out


def test_triton_compile_errors_are_summarised_without_the_source_dump():
    from triton.compiler.errors import CompilationError

    from autograder.diagnose import describe_exception

    plain = describe_exception(CompilationError("def f():\n    x = 1\n", None, "boom happened"))
    assert plain.code == "compile_error" and "boom happened" in plain.message
    try:
        try:
            raise CompilationError("    raise NotImplementedError()\n", None, "unsupported AST node type: Raise")
        except CompilationError as inner:
            raise CompilationError("o, lse = finalize(acc, l_i, m_i)\n", None, None) from inner
    except CompilationError as outer:
        assert describe_exception(outer).code == "not_implemented"


def test_a_cached_answer_is_caught(reference_kernel, runtime):
    cache = {}

    def cached(q, k, v):
        if q.shape not in cache:
            cache[q.shape] = reference_kernel.flash_attention_forward(q, k, v)
        return cache[q.shape]

    result = run_case(cached, Case(1, 1, 64, 16), runtime, fresh_call=True)
    assert codes(result) == ["cached_output"]
    assert run_case(reference_kernel.flash_attention_forward, Case(1, 1, 64, 16), runtime, fresh_call=True).passed


@pytest.mark.parametrize("case", [Case(1, 2, 70, 64), Case(2, 2, 50, 32, H_kv=1, causal=True)], ids=lambda c: c.label())
@pytest.mark.parametrize("scale_of", [lambda d: 2 / d ** 0.5, lambda d: 1.0 - d ** 0.5, lambda d: 0.3],
                         ids=["twice", "one_minus_sqrt_d", "a_constant"])
def test_a_scale_no_candidate_names_is_found_by_a_search(case, scale_of):
    """Attention at a mistyped scale (2/sqrt(D), 1 - sqrt(D), 0.3) is named wrong_scale with its value."""
    from autograder.checks import TOLERANCES
    from autograder.diagnose import diagnose_output
    from autograder.inputs import make_qkv
    from autograder.references import attention_reference

    q, k, v = make_qkv(case)
    ref, _ = attention_reference(q, k, v, **case.mask_kwargs)
    scale = scale_of(q.shape[-1])
    wrong, _ = attention_reference(q, k, v, scale=scale, **case.mask_kwargs)
    tol = TOLERANCES[q.dtype]
    found = diagnose_output(wrong.to(q.dtype), q, k, v, ref, tol.atol, tol.rtol, case)
    assert [f.code for f in found] == ["wrong_scale"], found
    # A large scale makes the softmax nearly one-hot, where nearby scales give the same output: the
    # value is found to within 1%.
    named = float(found[0].message.split("scaled by ")[1].split()[0])
    assert abs(named - scale) <= 0.01 * abs(scale), found[0].message


def test_the_scale_search_names_no_scale_for_a_mistake_of_another_kind():
    from autograder.checks import TOLERANCES
    from autograder.diagnose import diagnose_output
    from autograder.inputs import make_qkv
    from autograder.references import attention_reference

    case = Case(1, 2, 70, 64)
    q, k, v = make_qkv(case)
    ref, _ = attention_reference(q, k, v)
    keys_dropped, _ = attention_reference(q, k[:, :, :64], v[:, :, :64])  # the last 6 keys ignored
    tol = TOLERANCES[q.dtype]
    found = diagnose_output(keys_dropped.to(q.dtype), q, k, v, ref, tol.atol, tol.rtol, case)
    assert "wrong_scale" not in [f.code for f in found], found
