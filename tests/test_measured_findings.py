"""Causes found by measuring a wrong answer against quantities re-enacted from the reference, for any
problem: the output as acc combined with l by something other than a division, a negative scale, a
log-sum-exp built from the right max and sum by the wrong formula, acc and l rescaled by the same wrong
factor, an output wrong while its LSE is right, and which of dQ, dK, dV a backward gets wrong.

Each finding fires for the fault it names (in float64, and for the mutants of the reference answers
that showed it: scripts/mutation_score.py), and not for the right answer or the mistakes named before."""
import math

import pytest
import torch

from autograder import diagnose
from autograder.checks import TOLERANCES, run_case, run_grad_case
from autograder.inputs import Case, make_qkv
from autograder.notebook_code import read
from autograder.problems import problem2, problem3, problem4, problem7
from autograder.problems.online_softmax_faults import blockwise_attention
from autograder.problems.problem1 import torch_runtime
from autograder.references import LOG2_E, attention_reference, repeat_kv
from tests.helpers import REPO_ROOT, codes, kernel_module

LN_2 = math.log(2)
TOL = TOLERANCES[torch.float16]


def _inputs(case):
    q, k, v = make_qkv(case)
    ref, lse = attention_reference(q, k, v, **case.mask_kwargs)
    return q, k, v, ref, lse


def _max_and_sum(q, k, case):
    s = diagnose._scores(q, k, case)
    m = s.amax(-1, keepdim=True)
    return m, torch.exp(s - m).sum(-1, keepdim=True)


# --- the final division -------------------------------------------------------------------------

@pytest.mark.parametrize("case", [Case(1, 2, 200, 32, seed=1), Case(1, 2, 150, 32, seed=2, causal=True),
                                  Case(1, 4, 90, 16, H_kv=2, seed=3, window=20, sink=2)], ids=Case.label)
@pytest.mark.parametrize("op", ["*", "-", "+"])
def test_an_output_that_combines_acc_and_l_otherwise_than_by_division_is_named(case, op):
    q, k, v, ref, _ = _inputs(case)
    _, l = _max_and_sum(q, k, case)
    acc = ref * l
    o = {"*": acc * l, "-": acc - l, "+": acc + l}[op].half().double()
    found = diagnose.diagnose_output(o, q, k, v, ref, TOL.atol, TOL.rtol, case)
    assert codes_of(found) == ["finalize_not_divided"] and f"acc {op} l_i" in found[0].message, found


def codes_of(findings):
    return [f.code for f in findings]


def test_the_finalize_probe_leaves_the_right_output_and_acc_alone():
    case = Case(1, 2, 200, 32, seed=1)
    q, k, v, ref, _ = _inputs(case)
    _, l = _max_and_sum(q, k, case)
    assert diagnose._finalize_match(ref, q, k, ref, TOL.atol, TOL.rtol, case) is None
    assert diagnose._finalize_match(ref * l, q, k, ref, TOL.atol, TOL.rtol, case) is None  # no_normalise: a problem's


def test_a_negative_scale_is_named():
    case = Case(1, 2, 100, 64, "float32", seed=4)
    q, k, v, ref, _ = _inputs(case)
    o, _ = attention_reference(q, k, v, scale=-1 / math.sqrt(64))
    found = diagnose.diagnose_output(o, q, k, v, ref, 1e-4, 1e-4, case)
    assert codes_of(found) == ["wrong_scale"] and "negative" in found[0].message, found


# --- the log-sum-exp from the right max and sum, combined wrongly -------------------------------

def _lse_variants(q, k, case):
    """{name: lse} for the slips in (m_i + log2(l_i)) * ln 2, m_i = max * log2(e) (base 2), from float64."""
    m, l = _max_and_sum(q, k, case)
    m, l = m.squeeze(-1), l.squeeze(-1)
    m2 = m * LOG2_E
    return {
        "log2(l_i) is subtracted": (m2 - torch.log2(l)) * LN_2,
        "ln 2 is subtracted": m2 + torch.log2(l) - LN_2,
        "ln 2 is added": m2 + torch.log2(l) + LN_2,
        "divided by ln 2": (m2 + torch.log2(l)) / LN_2,
        "the natural log of l_i": (m2 + torch.log(l)) * LN_2,
    }


@pytest.mark.parametrize("case", [Case(1, 2, 128, 64, seed=5), Case(1, 2, 200, 64, seed=6, causal=True)],
                         ids=Case.label)
def test_each_slip_in_the_lse_formula_is_fitted_and_named(case):
    q, k, v, _, ref_lse = _inputs(case)
    for slip, lse in _lse_variants(q, k, case).items():
        lse = lse.float().double()  # the kernel stores float32
        found = diagnose.diagnose_lse(lse, ref_lse, q, k, 1e-3, case)
        assert codes_of(found) == ["lse_wrong_formula"] and slip in found[0].message, (slip, found)


def test_the_lse_fit_leaves_the_named_lse_mistakes_and_the_right_lse_to_their_own_codes():
    case = Case(1, 2, 128, 64, seed=5)
    q, k, v, _, ref_lse = _inputs(case)
    m, _ = _max_and_sum(q, k, case)
    m = m.squeeze(-1)
    assert diagnose.diagnose_lse(ref_lse, ref_lse, q, k, 1e-3, case) == []
    named = {"lse_base2": ref_lse * LOG2_E, "lse_no_max": ref_lse - m, "lse_no_sum": m,
             "lse_wrong_max": ref_lse + (LOG2_E - 1) * m}
    for code, lse in named.items():
        assert codes_of(diagnose.diagnose_lse(lse, ref_lse, q, k, 1e-3, case)) == [code]


def test_the_lse_fit_needs_many_rows():
    case = Case(1, 1, 1, 16, seed=7)
    q, k, v, _, ref_lse = _inputs(case)
    assert diagnose._lse_wrong_formula(ref_lse + LN_2, ref_lse, ref_lse, 1e-3) is None


# --- acc and l rescaled by the same wrong factor ------------------------------------------------

def _wrong_alpha(q, k, v, block_n, alpha_of, case=None):
    """Float64 online softmax over key blocks, with alpha = alpha_of(m_old, m_new) (base-2 maxima) for acc and l."""
    s = diagnose._scores(q, k, case) * LOG2_E
    v = repeat_kv(v.double(), q.shape[1] // v.shape[1])
    m = torch.full(s.shape[:-1], float("-inf"), dtype=torch.float64)
    l = torch.zeros_like(m)
    acc = torch.zeros(*s.shape[:-1], v.shape[-1], dtype=torch.float64)
    for start in range(0, s.shape[-1], block_n):
        block = s[..., start:start + block_n]
        m_new = torch.maximum(m, block.amax(-1))
        alpha = torch.nan_to_num(alpha_of(m, m_new), nan=0.0)  # a row with nothing seen yet: alpha 0
        p = torch.exp2(block - m_new[..., None])
        p = torch.nan_to_num(p, nan=0.0)
        l = l * alpha + p.sum(-1)
        acc = acc * alpha[..., None] + p @ v[..., start:start + block_n, :]
        m = m_new
    return acc / l[..., None]


ALPHAS = {"exp_for_exp2": lambda old, new: torch.exp(old - new),
          "plus": lambda old, new: torch.exp2(torch.clamp(old + new, max=30)),
          "halved": lambda old, new: torch.exp2(old - new) / 2}


@pytest.mark.parametrize("case", [Case(1, 2, 200, 64, seed=8), Case(1, 2, 256, 64, seed=9, causal=True)],
                         ids=Case.label)
@pytest.mark.parametrize("alpha", sorted(ALPHAS))
def test_acc_and_l_rescaled_by_the_same_wrong_factor_are_named(case, alpha):
    q, k, v, ref, _ = _inputs(case)
    o = _wrong_alpha(q, k, v, 64, ALPHAS[alpha], case).half().double()
    assert not torch.allclose(o, ref, atol=TOL.atol, rtol=TOL.rtol)
    found = diagnose.diagnose_output(o, q, k, v, ref, TOL.atol, TOL.rtol, case)
    assert codes_of(found) == ["alpha_wrong"] and "64-key blocks" in found[0].message, found


# (no_max_update is such a mix, alpha = 0 at every step; problem 3 names it before the generic probes run.)
@pytest.mark.parametrize("faults", [set(), {"no_acc_rescale"}, {"no_l_rescale"}, {"acc_rescale_after_add"}])
def test_the_block_mix_leaves_other_rescale_mistakes_alone(faults):
    case = Case(1, 2, 200, 64, seed=8)
    q, k, v, ref, _ = _inputs(case)
    o, _ = blockwise_attention(q, k, v, 64, frozenset(faults))
    assert diagnose._block_mix_match(o.half().double(), q, k, v, ref, TOL.atol, TOL.rtol, case) is None


# --- the kernels: the mutants of the reference answers that these findings name -----------------

P3_FINALIZE = "    o = acc / l_i[:, None]\n"
P3_LSE = "(m_i + tl.math.log2(l_i)) * LN_2"
P3_ALPHA = "tl.math.exp2(m_i - m_new)"
P3_RESCALE = "acc = acc * alpha[:, None]"
PROBLEM3_MUTANTS = {
    # name: (edits, the cause)
    "o_times_l": (((P3_FINALIZE, "    o = acc * l_i[:, None]\n"),), "finalize_not_divided"),
    "o_minus_l": (((P3_FINALIZE, "    o = acc - l_i[:, None]\n"),), "finalize_not_divided"),
    "lse_minus_log": (((P3_LSE, "(m_i - tl.math.log2(l_i)) * LN_2"),), "lse_wrong_formula"),
    "lse_minus_ln2": (((P3_LSE, "(m_i + tl.math.log2(l_i)) - LN_2"),), "lse_wrong_formula"),
    "lse_plus_ln2": (((P3_LSE, "(m_i + tl.math.log2(l_i)) + LN_2"),), "lse_wrong_formula"),
    "lse_over_ln2": (((P3_LSE, "(m_i + tl.math.log2(l_i)) / LN_2"),), "lse_wrong_formula"),
    "lse_natural_log": (((P3_LSE, "(m_i + tl.math.log(l_i)) * LN_2"),), "lse_wrong_formula"),
    "alpha_exp": (((P3_ALPHA, "tl.math.exp(m_i - m_new)"),), "alpha_wrong"),
    "alpha_plus": (((P3_ALPHA, "tl.math.exp2(m_i + m_new)"),), "alpha_wrong"),
    "alpha_divided": (((P3_ALPHA, "tl.math.exp2(m_i / m_new)"),), "alpha_wrong"),
    "acc_plus_alpha": (((P3_RESCALE, "acc = acc + alpha[:, None]"),), "output_wrong_lse_right"),
    "acc_minus_alpha": (((P3_RESCALE, "acc = acc - alpha[:, None]"),), "output_wrong_lse_right"),
    "max_plus_scale": ((("tl.max(qk, axis=1) * qk_scale", "tl.max(qk, axis=1) + qk_scale"),),
                       "output_wrong_lse_right"),
}


@pytest.mark.parametrize("name", sorted(PROBLEM3_MUTANTS))
def test_problem3_mutants_get_their_measured_cause(runtime, name):
    edits, cause = PROBLEM3_MUTANTS[name]
    module = kernel_module(problem3, read(REPO_ROOT / "solutions/problem3/problem3.ipynb"), edits, name=name)
    result = run_case(module.flash_attention_forward, Case(1, 2, 128, 64), runtime, diagnoses=problem3.DIAGNOSES,
                      lse_diagnoses=problem3.LSE_DIAGNOSES)
    assert not result.passed and codes(result) == [cause], "\n".join(result.lines())


def test_the_right_kernel_has_no_cause_to_find(reference_kernel, runtime):
    result = run_case(reference_kernel.flash_attention_forward, Case(1, 2, 128, 64), runtime,
                      diagnoses=problem3.DIAGNOSES, lse_diagnoses=problem3.LSE_DIAGNOSES)
    assert result.passed and not result.findings


PROBLEM4_MUTANTS = {
    "stage1_from_key_1": ((("    lo1 = 0\n", "    lo1 = 1\n"),), "stage1_start"),
    "alpha_exp": ((("tl.math.exp2(m_i - m_new)", "tl.math.exp(m_i - m_new)"),), "alpha_wrong"),
    "o_plus_l": ((("    o = acc / l_i[:, None]\n", "    o = acc + l_i[:, None]\n"),), "finalize_not_divided"),
    "lse_over_ln2": ((("(m_i + tl.math.log2(l_i)) * LN_2", "(m_i + tl.math.log2(l_i)) / LN_2"),),
                     "lse_wrong_formula"),
    "acc_plus_alpha": ((("acc = acc * alpha[:, None]", "acc = acc + alpha[:, None]"),), "output_wrong_lse_right"),
}


@pytest.mark.parametrize("name", sorted(PROBLEM4_MUTANTS))
def test_problem4_mutants_get_their_measured_cause(runtime, name):
    edits, cause = PROBLEM4_MUTANTS[name]
    module = kernel_module(problem4, read(REPO_ROOT / "solutions/problem4/problem4.ipynb"), edits, name="p4" + name)
    fn = module.flash_attention_causal
    result = run_case(fn, Case(1, 2, 200, 64, seed=3, causal=True), runtime, diagnoses=problem4.causal_diagnoses(fn))
    assert not result.passed and codes(result) == [cause], "\n".join(result.lines())


def test_the_stage1_reenactment_is_not_the_right_answer():
    case = Case(1, 2, 300, 32, seed=5, causal=True)
    q, k, v = make_qkv(case)
    ref, _ = attention_reference(q, k, v, is_causal=True)
    sim = problem4.reenact(q, k, v, 128, 64, "stage1_from_key_1", "causal")
    assert (sim - ref).abs().max() > 1e-2


PROBLEM2_MUTANTS = {
    "o_minus_l": ((("    o = acc / l[..., None]\n", "    o = acc - l[..., None]\n"),), "finalize_not_divided"),
    "negative_scale": ((("scale = 1.0 / math.sqrt", "scale = -1 / math.sqrt"),), "wrong_scale"),
    "scores_divided_by_scale": ((("k_block.transpose(-1, -2)) * scale", "k_block.transpose(-1, -2)) / scale"),),
                                "wrong_scale"),
}


@pytest.mark.parametrize("name", sorted(PROBLEM2_MUTANTS))
def test_problem2_mutants_get_their_measured_cause(name):
    edits, cause = PROBLEM2_MUTANTS[name]
    module = kernel_module(problem2, read(REPO_ROOT / "solutions/problem2/problem2.ipynb"), edits, name="p2" + name)
    result = run_case(module.tiled_attention, Case(1, 2, 128, 64, "float32"), runtime=torch_runtime(),
                      require_triton=False, diagnoses=(problem2.diagnose_tiled_attention,))
    assert not result.passed and codes(result) == [cause], "\n".join(result.lines())


# --- the backward: which gradients are wrong ----------------------------------------------------

@pytest.mark.parametrize("wrong,code", [({"dq", "dk"}, "grad_ds_wrong"), ({"dk"}, "grad_dk_step"),
                                        ({"dq"}, "grad_dq_step"), ({"dv"}, "grad_dv_step"),
                                        ({"dq", "dk", "dv"}, "grad_p_wrong"), ({"dk", "dv"}, "grad_p_wrong")])
def test_the_wrong_gradients_say_where_to_look(wrong, code):
    assert diagnose.grad_pattern(wrong).code == code


def test_no_wrong_gradient_no_pattern():
    assert diagnose.grad_pattern(set()) is None


# Edits of the reference answer. Its dkdv_update computes P^T and dS^T itself (keys by queries), so a
# mistake in recompute_p or score_grad, which reaches both kernels in a student's answer built on
# them, is made in its transposed line too.
PROBLEM7_MUTANTS = {
    "ds_times_delta": ((("ds = p * (dp - delta[:, None])", "ds = p * (dp * delta[:, None])"),
                        ("ds_t = p_t * (dp_t - delta[None, :])", "ds_t = p_t * (dp_t * delta[None, :])")),
                       "grad_ds_wrong"),
    "ds_minus_p": ((("ds = p * (dp - delta[:, None])", "ds = p - (dp - delta[:, None])"),
                    ("ds_t = p_t * (dp_t - delta[None, :])", "ds_t = p_t - (dp_t - delta[None, :])")),
                   "grad_ds_wrong"),
    "delta_plus": ((("o.to(tl.float32) * do.to(tl.float32)", "o.to(tl.float32) + do.to(tl.float32)"),),
                   "delta_wrong"),
    "dk_minus_scale": ((("(ds_t * sm_scale)", "(ds_t - sm_scale)"),), "grad_dk_step"),
    "dq_minus_scale": ((("dq = tl.dot((ds * sm_scale)", "dq = tl.dot((ds - sm_scale)"),), "grad_dq_step"),
    "score_grad_swapped_in_dq": (((
        "    ds = score_grad(p, dp, delta)\n    dq = ", "    ds = score_grad(dp, p, delta)\n    dq = "),),
        "grad_dq_step"),
    "mask_fill_minus_one": ((("query_idx[:, None], p, 0.0)", "query_idx[:, None], p, -1.0)"),
                             ("query_idx[None, :], p_t, 0.0)", "query_idx[None, :], p_t, -1.0)")), "grad_p_wrong"),
}


@pytest.mark.parametrize("name", sorted(PROBLEM7_MUTANTS))
def test_problem7_mutants_get_their_measured_cause(runtime, name):
    edits, cause = PROBLEM7_MUTANTS[name]
    module = kernel_module(problem7, read(REPO_ROOT / "solutions/problem7/problem7.ipynb"), edits, name="p7" + name)
    fn = module.flash_attention_grads
    result = run_grad_case(fn, Case(1, 2, 80, 16, seed=2, causal=True), runtime,
                           diagnoses=problem7.backward_diagnoses(fn))
    assert not result.passed and codes(result) == [cause], "\n".join(result.lines())


def test_a_block_left_out_is_a_mix_too_and_the_finding_says_so():
    case = Case(1, 2, 200, 64, seed=8)
    q, k, v, ref, _ = _inputs(case)
    keep = torch.cat([torch.arange(0, 64), torch.arange(128, 200)])
    o, _ = attention_reference(q, k[:, :, keep], v[:, :, keep])  # the keys 64..127 never visited
    found = diagnose._block_mix_match(o.half().double(), q, k, v, ref, TOL.atol, TOL.rtol, case)
    assert found is not None and found.code == "alpha_wrong" and "skipped" in found.message, found
