"""Problem 2 (online softmax, tiled attention in PyTorch): the reference earns every point, each
typical mistake is named, the memory check cannot be fooled, and the large-logit cases really
break a naive exp."""
import math

import nbformat
import pytest
import torch

from autograder.checks import CheckFailed, run_case, stderr_to_stdout
from autograder.grading.samples import SAMPLES, apply_edits, build_submission
from autograder.grading.verify import graded_test_cells, verify
from autograder.inputs import Case, make_qkv
from autograder.integrity import watch_call
from autograder.kernel_module import import_kernel_module
from autograder.notebook_code import cell_by_id, read, strip_markers
from autograder.problems import problem2, reference_module
from autograder.problems.problem2 import (
    SoftmaxCase,
    check_tiled_attention,
    make_logits,
    no_score_matrix,
    run_softmax_case,
    score_matrix_limit,
    torch_runtime,
)
from tests.helpers import REPO_ROOT, checked_cases, codes

SOURCE = "solutions/problem2/problem2.ipynb"
RELEASED = "notebooks/problem2/problem2.ipynb"
PROBLEM2_SAMPLES = SAMPLES["problem2"]


@pytest.fixture(scope="module")
def source_nb(repo_root):
    return read(repo_root / SOURCE)


@pytest.fixture(scope="module")
def solution_code(source_nb):
    return strip_markers(cell_by_id(source_nb, problem2.SPEC.student_cell).source)


def variant(solution_code, edits=(), student_code=None, name="variant"):
    """The answer module (imports + answer cell) with the answer edited or replaced."""
    code = student_code if student_code is not None else apply_edits(solution_code, edits)
    return import_kernel_module(problem2.SPEC, read(REPO_ROOT / SOURCE), answer=code, name=name)


@pytest.fixture(scope="module")
def graded_cases(source_nb):
    """{grade_id: [cases]}: what each graded cell checks."""
    return checked_cases(source_nb, problem2, ("check_online_softmax", "check_tiled_attention"),
                         ("online_softmax", "tiled_attention"))


# --- the reference earns every point --------------------------------------------------------

def test_reference_passes_every_graded_cell_quietly(repo_root, source_nb, capfd):
    """As verify_worker does: the kernel cells as a module, each graded cell (hidden ones too) run
    against it; none raises and nothing reaches stderr (nbgrader zeroes a cell that writes there)."""
    module = reference_module(problem2.SPEC, repo_root)
    cells = graded_test_cells(source_nb)
    assert sum(c.metadata["nbgrader"]["points"] for c in source_nb.cells
               if c.metadata.get("nbgrader", {}).get("grade")) == 10
    for test, code in cells:
        namespace = {"__name__": "__verify__"}
        namespace.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
        exec(compile(code, f"<{test}>", "exec"), namespace)
    out, err = capfd.readouterr()
    assert err == ""
    assert out.count("FAIL") == 0 and out.count("cases passed") == len(cells)


def test_float32_cases_run_in_float32(solution_code):
    """The course runtime swaps dtypes for Triton's interpreter; these checks run PyTorch code,
    so a float32 case must reach the function as float32."""
    seen = []

    def spy(q, k, v):
        seen.append(q.dtype)
        return variant(solution_code).tiled_attention(q, k, v)

    result = run_case(spy, Case(1, 1, 64, 16, "float32"), runtime=torch_runtime(), require_triton=False)
    assert result.passed and not result.note and set(seen) == {torch.float32}


# --- each typical mistake is named ----------------------------------------------------------

def run_sample_cells(module, source_nb):
    """{grade_id: passed} for every graded cell, run in-process on `module`'s functions."""
    outcome = {}
    for gid, code in graded_test_cells(source_nb):
        namespace = {"online_softmax": module.online_softmax, "tiled_attention": module.tiled_attention}
        try:
            exec(compile(code, gid, "exec"), namespace)
            outcome[gid] = True
        except CheckFailed:
            outcome[gid] = False
    return outcome


@pytest.mark.parametrize("sample", [s for s in PROBLEM2_SAMPLES if not s.untouched], ids=lambda s: s.name)
def test_each_sample_earns_its_points_and_names_its_cause(source_nb, solution_code, sample, capsys):
    module = variant(solution_code, sample.edits, name=sample.name)
    passed = run_sample_cells(module, source_nb)
    points = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"]
              for c in source_nb.cells if c.metadata.get("nbgrader", {}).get("grade")}
    out = capsys.readouterr().out
    assert sum(points[g] for g, ok in passed.items() if ok) == sample.expected_points, out
    if sample.expected_cause:
        assert f"likely cause ({sample.expected_cause})" in out, out


def test_untouched_answer_says_not_implemented(repo_root):
    released = cell_by_id(read(repo_root / RELEASED), problem2.SPEC.student_cell).source
    module = variant("", student_code=released, name="untouched")
    softmax = run_softmax_case(module.online_softmax, SoftmaxCase(2, 64, 16))
    attention = run_case(module.tiled_attention, Case(1, 1, 64, 16, "float32"), runtime=torch_runtime(),
                         require_triton=False)
    assert codes(softmax) == ["not_implemented"] and codes(attention) == ["not_implemented"]
    assert "Traceback" not in "\n".join(softmax.lines() + attention.lines())


SOFTMAX_MISTAKES = [
    ("no_safe_max", (("        m_safe = torch.where(m_new == -math.inf, 0.0, m_new)\n", "        m_safe = m_new\n"),),
     SoftmaxCase(6, 200, 50, masked=("first_block", "middle_block", "row"), seed=12), "nan_masked_block"),
    ("alpha_inverted", (("alpha = torch.exp(m - m_safe)", "alpha = torch.exp(m_safe - m)"),),
     SoftmaxCase(4, 256, 64, "float64"), "alpha_inverted"),
    ("dropped_tail", (("    for start in range(0, n, block_size):\n",
                       "    for start in range(0, n - block_size + 1, block_size):\n"),),
     SoftmaxCase(8, 200, 64, seed=1), "dropped_tail"),
    ("no_normalise", (("    return torch.exp(x - m[:, None]) / l[:, None]\n",
                       "    return torch.exp(x - m[:, None])\n"),),
     SoftmaxCase(8, 200, 64, seed=1), "no_normalise"),
    ("no_l_rescale_at_1e4", (("        l = l * alpha + torch.exp", "        l = l + torch.exp"),),
     SoftmaxCase(8, 300, 64, logit_scale=1e4, seed=10), "no_l_rescale"),
]


@pytest.mark.parametrize("name,edits,case,cause", SOFTMAX_MISTAKES, ids=[m[0] for m in SOFTMAX_MISTAKES])
def test_each_softmax_mistake_is_named(solution_code, name, edits, case, cause):
    result = run_softmax_case(variant(solution_code, edits, name="sm_" + name).online_softmax, case)
    assert not result.passed and codes(result) == [cause], "\n".join(result.lines())


def test_returning_zeros_for_a_fully_masked_row_breaks_the_convention(solution_code):
    def zeros_for_masked_rows(x, block_size):
        return variant(solution_code).online_softmax(x, block_size).nan_to_num(0.0)

    result = run_softmax_case(zeros_for_masked_rows, SoftmaxCase(4, 64, 16, masked=("row",)))
    assert codes(result) == ["masked_row"] and "NaN" in result.findings[0].message


def test_a_wrong_float32_softmax_gets_a_diagnosis_not_a_crash(solution_code):
    """A float32 answer that no re-enacted mistake explains is compared with float32 re-enactments
    (the overflow check's) as well as float64 ones: the self-check names a cause, and never raises."""
    def half_scaled(x, block_size):
        return variant(solution_code).online_softmax(x, block_size) * 1.5

    result = run_softmax_case(half_scaled, SoftmaxCase(4, 70, 16, dtype="float32"))
    assert not result.passed and codes(result) == ["row_sums"], "\n".join(result.lines())


def test_builtin_softmax_gets_no_credit():
    result = run_softmax_case(lambda x, block_size: torch.softmax(x, dim=-1), SoftmaxCase(2, 64, 16))
    assert codes(result) == ["uses_builtin_softmax"]


ATTENTION_MISTAKES = [
    ("no_max_subtraction", (("        m_new = torch.maximum(m, s.amax(dim=-1))\n",
                             "        m_new = torch.zeros_like(m)\n"),),
     Case(2, 2, 200, 32, "float32", seed=61, logit_scale=30), "no_max_subtraction"),
    ("no_l_rescale", (("        l = l * alpha + p.sum(dim=-1)\n", "        l = l + p.sum(dim=-1)\n"),),
     Case(2, 2, 200, 32, "float32", seed=1), "no_l_rescale"),
    ("no_normalise", (("    o = acc / l[..., None]\n", "    o = acc\n"),),
     Case(2, 2, 200, 32, "float32", seed=1), "no_normalise"),
    ("dropped_tail_short_keys", (("    for start in range(0, seq_len_k, block_n):\n",
                                  "    for start in range(0, seq_len_k - block_n + 1, block_n):\n"),),
     Case(2, 3, 17, 32, "float32", seed=21), "dropped_tail"),
]


@pytest.mark.parametrize("name,edits,case,cause", ATTENTION_MISTAKES, ids=[m[0] for m in ATTENTION_MISTAKES])
def test_each_attention_mistake_is_named(solution_code, name, edits, case, cause):
    fn = variant(solution_code, edits, name="att_" + name).tiled_attention
    result = run_case(fn, case, runtime=torch_runtime(), require_triton=False,
                      extra_checks=(no_score_matrix,), diagnoses=(problem2.diagnose_tiled_attention,))
    assert not result.passed and codes(result) == [cause], "\n".join(result.lines())


def test_builtin_attention_gets_no_credit():
    def sdpa(q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v), torch.zeros(q.shape[:-1])

    with pytest.raises(CheckFailed, match="scaled_dot_product"):
        check_tiled_attention(sdpa, [Case(1, 1, 64, 16, "float32")])


# --- the memory check -------------------------------------------------------------------------

def materialised(q, k, v):
    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return (torch.exp(s - s.amax(-1, keepdim=True)) / torch.exp(s - s.amax(-1, keepdim=True)).sum(-1, keepdim=True)
            @ v.float()).to(q.dtype), torch.logsumexp(s, dim=-1)


def head_by_head(q, k, v):
    """Materialises too, one (batch, head) slice at a time: each slice's Lq x Lk matrix exists."""
    outs, lses = torch.empty_like(q), torch.empty(q.shape[:-1])
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            o, lse = materialised(q[b:b + 1, h:h + 1], k[b:b + 1, h:h + 1], v[b:b + 1, h:h + 1])
            outs[b, h], lses[b, h] = o[0, 0], lse[0, 0]
    return outs, lses


@pytest.mark.parametrize("fn", [materialised, head_by_head], ids=["whole", "head_by_head"])
def test_memory_check_fails_a_materialised_score_matrix(fn):
    case = Case(1, 2, 600, 32, "float32", seed=3)
    result = run_case(fn, case, runtime=torch_runtime(), require_triton=False, extra_checks=(no_score_matrix,))
    assert codes(result) == ["materialised_scores"], "\n".join(result.lines())
    assert "600 x 600" in result.findings[0].message and "block_n" in result.findings[0].message


@pytest.mark.parametrize("block_n", [16, 64, 128])
def test_memory_check_passes_tiled_attention_with_any_reasonable_block(solution_code, block_n):
    fn = variant(solution_code).tiled_attention
    for case in (Case(1, 2, 600, 32, "float32", seed=3), Case(1, 1, 300, 64, "float32", L_k=520, seed=4)):
        q, k, v = make_qkv(case)
        with watch_call((q, k, v)) as watch:
            fn(q, k, v, block_n=block_n)
        assert no_score_matrix(watch, q, k, v, case) is None
        b, h, lq, d = q.shape
        assert watch.largest_numel <= b * h * max(lq, k.shape[2]) * max(d, block_n)


def test_memory_limit_stands_aside_where_a_block_and_the_matrix_look_alike():
    # Tiny shapes: a block of 128 keys is the whole row, and copies of K are as large as the scores.
    assert score_matrix_limit((1, 1, 17, 32), (1, 1, 17, 32), (1, 1, 17, 32)) is None
    assert score_matrix_limit((1, 2, 128, 64), (1, 2, 128, 64), (1, 2, 128, 64)) is None
    # One head's matrix is the limit once it dwarfs everything a tiled solution holds ...
    assert score_matrix_limit((1, 2, 600, 32), (1, 2, 600, 32), (1, 2, 600, 32))[0] == 600 * 600
    # ... and all heads' matrices together where only that is unambiguous.
    assert score_matrix_limit((2, 2, 200, 32), (2, 2, 200, 32), (2, 2, 200, 32))[0] == 4 * 200 * 200


def test_every_memory_cell_case_can_catch_a_materialised_matrix(graded_cases):
    cases = graded_cases["test_no_score_matrix"]
    for case in cases:
        shape_q = (case.B, case.H, case.L, case.D)
        shape_k = (case.B, case.heads_kv, case.len_k, case.D)
        limit = score_matrix_limit(shape_q, shape_k, shape_k)
        assert limit is not None and limit[0] == case.L * case.len_k  # even head by head


# --- the large-logit cases really break a naive exp ----------------------------------------------

def test_huge_softmax_logits_overflow_a_naive_exp(graded_cases):
    cases = [c for c in graded_cases["test_hidden_softmax_stability"]
             if c.logit_scale >= 1e4]
    assert len(cases) >= 2 and {c.dtype for c in cases} == {"float32", "float64"}
    for case in cases:
        x = make_logits(case)
        finite_rows = torch.isfinite(x).any(dim=1)
        assert torch.isinf(torch.exp(x))[finite_rows].any(dim=1).all()  # every row overflows


def test_large_attention_logits_overflow_a_naive_exp_in_float32(graded_cases):
    cases = graded_cases["test_hidden_large_logits"]
    assert cases and all(c.logit_scale > 1 and c.dtype == "float32" for c in cases)
    for case in cases:
        q, k, v = make_qkv(case)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(case.D)
        overflowing_rows = torch.isinf(torch.exp(scores)).any(dim=-1).float().mean()
        assert overflowing_rows > 0.02, f"{case.label()}: only {overflowing_rows:.1%} of rows overflow"


# --- the notebooks ----------------------------------------------------------------------------


@pytest.mark.parametrize("sample_name,failing", [
    ("correct", set()),
    ("attention_materialised", {"test_tiled_attention", "test_no_score_matrix", "test_hidden_attention_shapes",
                                "test_hidden_large_logits"}),
])
def test_clean_rerun_agrees(repo_root, tmp_path, sample_name, failing):
    """The fresh-interpreter re-run (verify.py, torch policy) grades the answer cell like the notebook."""
    sample = next(s for s in PROBLEM2_SAMPLES if s.name == sample_name)
    submission = tmp_path / "problem2.ipynb"
    nbformat.write(build_submission(sample, read(repo_root / SOURCE), read(repo_root / RELEASED),
                                    problem2.SPEC.student_cell, problem2.SPEC.kernel_cells[-1]), str(submission))
    outcome = verify(submission, repo_root / SOURCE, repo_root / RELEASED, problem2.SPEC.kernel_cells,
                     problem2.SPEC.student_cell, timeout_s=600, policy=problem2.SPEC.answer_policy)
    assert not outcome.violations and not outcome.error
    assert {t for t, (ok, _) in outcome.results.items() if not ok} == failing, outcome.results
    assert len(outcome.results) == 6


def test_self_check_runs_the_visible_cases(solution_code, capsys):
    module = variant(solution_code)
    with stderr_to_stdout():
        problem2.check(module.online_softmax, module.tiled_attention)
    out = capsys.readouterr().out
    assert out.count("PASS") == len(problem2.SELF_CHECK_SOFTMAX) + len(problem2.SPEC.self_check_cases)


@pytest.mark.gpu
def test_gpu_reference_passes_every_graded_cell_and_holds_less_memory_than_naive(repo_root, source_nb, capfd,
                                                                                  monkeypatch):
    """On a GPU the checks run on CUDA tensors; the benchmark cell times the Python loop against
    naive attention and SDPA, and the loop's peak memory stays far below the score matrix's."""
    monkeypatch.delenv("COURSE_GRADING", raising=False)
    module = reference_module(problem2.SPEC, repo_root)
    for test, code in graded_test_cells(source_nb):
        namespace = {k: v for k, v in vars(module).items() if not k.startswith("__")}
        exec(compile(code, f"<{test}>", "exec"), namespace)
    assert capfd.readouterr().err == ""
    rows = problem2.benchmark(module.tiled_attention, lengths=(1024, 4096), batch=2, heads=8)
    mine = {r["L"]: r for r in rows if r["impl"] == "tiled_attention (yours)"}
    naive = {r["L"]: r for r in rows if r["impl"] == "naive PyTorch"}
    assert all("skipped" not in r for r in mine.values())
    assert mine[4096]["peak_mib"] < naive[4096]["peak_mib"] / 4
