"""Where the first NaN or infinity of an interpreted kernel came from (autograder/nan_trace.py), and
that a check's NaN finding says so instead of guessing."""
import pytest
import torch
import triton
import triton.language as tl

from autograder import nan_trace
from autograder.checks import run_case
from autograder.inputs import Case
from autograder.problems import problem3
from tests.helpers import kernel_variant

CASE = Case(1, 2, 200, 64, seed=3)


def interpreted(runtime):
    if not runtime.interpreter:
        pytest.skip("the arithmetic is watched in the Triton interpreter only")


@triton.jit
def _subtract_kernel(x_ptr, y_ptr, out_ptr, N: tl.constexpr):
    offs = tl.arange(0, N)
    x = tl.load(x_ptr + offs)
    y = tl.load(y_ptr + offs)
    diff = x - y   # the line the trace names
    tl.store(out_ptr + offs, tl.exp2(diff))


def test_minus_inf_minus_minus_inf_is_named_with_its_line(runtime):
    interpreted(runtime)
    x = torch.tensor([1.0, float("-inf"), 2.0, 0.0])
    out = torch.empty_like(x)
    with nan_trace.watch() as trace:
        _subtract_kernel[(1,)](x, x.clone(), out, N=4)
    assert torch.isnan(out[1]) and torch.isfinite(out[[0, 2, 3]]).all()
    first = trace.first("nan")
    assert first.op == "subtract" and first.operands == (float("-inf"), float("-inf"))
    assert first.source.startswith("diff = x - y")
    assert trace.explain() == ("the first NaN appeared in `diff = x - y`: -inf - (-inf) is NaN: a row whose "
                               "scores were all -inf so far (a fully masked block, or m_i before any key) "
                               "subtracted from itself")


def test_an_overflow_before_the_nan_is_named_as_its_cause(runtime):
    """p from the unscaled scores: exp2 gives millions, which float16 cannot hold, so p @ V is NaN."""
    interpreted(runtime)
    from autograder.inputs import make_qkv

    module = kernel_variant((("p = tl.math.exp2(qk * qk_scale - m_new[:, None])",
                              "p = tl.math.exp2(qk - m_new[:, None])"),), name="nan_p_unscaled")
    q, k, v = make_qkv(CASE)
    with nan_trace.watch() as trace:
        o, _ = module.flash_attention_forward(q, k, v)
    assert not torch.isfinite(o).all()
    text = trace.explain()
    assert text.startswith("the first infinity appeared in `acc = tl.dot(p.to(v.dtype), v, acc)`: ")
    assert "does not fit in fp16" in text and "then a dot product with an infinite operand is NaN" in text


def test_a_correct_kernel_makes_no_event_and_the_interpreter_is_restored(runtime, reference_kernel):
    interpreted(runtime)
    from triton.runtime import interpreter

    from autograder.inputs import make_qkv

    before = dict(vars(interpreter.InterpreterBuilder))
    q, k, v = make_qkv(CASE)
    with pytest.raises(RuntimeError, match="leaves the block"):
        with nan_trace.watch() as trace:
            o, _ = reference_kernel.flash_attention_forward(q, k, v)
            raise RuntimeError("leaves the block")
    assert torch.isfinite(o).all() and trace.events == [] and trace.explain() is None
    assert dict(vars(interpreter.InterpreterBuilder)) == before


@pytest.mark.parametrize("edit, code, says", [
    (("lse = (m_i + tl.math.log2(l_i)) * LN_2", "lse = (m_i + tl.math.log2(-l_i)) * LN_2"), "lse_nan",
     "the first NaN appeared in `lse = (m_i + tl.math.log2(-l_i)) * LN_2`: log2 of a negative number"),
    (("o = acc / l_i[:, None]", "o = acc / (l_i[:, None] - l_i[:, None])"), "all_nan",
     "the first infinity appeared in `o = acc / (l_i[:, None] - l_i[:, None])`: "),
])
def test_a_checks_nan_finding_says_where_the_first_one_came_from(runtime, edit, code, says):
    interpreted(runtime)
    module = kernel_variant((edit,), name=f"nan_{code}")
    result = run_case(module.flash_attention_forward, CASE, runtime, diagnoses=problem3.DIAGNOSES,
                      lse_diagnoses=problem3.LSE_DIAGNOSES)
    assert not result.passed and [f.code for f in result.findings] == [code], "\n".join(result.lines())
    assert says in result.findings[0].message, result.findings[0].message
    if code == "all_nan":
        assert "/ 0 is inf: a division by zero" in result.findings[0].message


def test_a_nan_gradient_says_where_the_first_one_came_from(runtime):
    """Problem 7's dS divided by P - P: 0 / 0 in every tile, named in dS's line."""
    interpreted(runtime)
    from autograder.checks import run_grad_case
    from autograder.notebook_code import read
    from autograder.problems import problem7
    from tests.helpers import REPO_ROOT, kernel_module

    module = kernel_module(problem7, read(REPO_ROOT / "solutions/problem7/problem7.ipynb"),
                           (("ds = p * (dp - delta[:, None])", "ds = p * (dp - delta[:, None]) / (p - p)"),),
                           name="nan_ds")
    result = run_grad_case(module.flash_attention_grads, Case(1, 1, 70, 16, causal=True), runtime)
    nan = [f for f in result.findings if f.code == "grad_nan"]
    assert not result.passed and nan, "\n".join(result.lines())
    assert "the first NaN appeared in `ds = p * (dp - delta[:, None]) / (p - p)`: 0 / 0 is NaN" in nan[0].message
