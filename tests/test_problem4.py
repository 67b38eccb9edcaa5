"""Problem 4 (causal): the reference passes every graded cell, each sample's mistake is named, the
block-visit check fails a kernel that masks everything but skips nothing, the float64 re-enactment
of the kernel's stages is exact (the notebooks themselves: tests/test_notebooks.py)."""

import pytest
import torch

from autograder.block_visits import minimal_visits
from autograder.checks import run_case
from autograder.grading.sample_sets.problem4 import SAMPLES
from autograder.inputs import Case, make_qkv
from autograder.notebook_code import cell_by_id, read
from autograder.problems import problem4, reference_module
from autograder.references import attention_reference
from tests.helpers import graded_cells, kernel_module, likely_causes, run_graded_cell, run_printing_check

SOURCE = "solutions/problem4/problem4.ipynb"
RELEASED = "notebooks/problem4/problem4.ipynb"


@pytest.fixture(scope="module")
def source_nb(repo_root):
    return read(repo_root / SOURCE)


@pytest.fixture(scope="module")
def reference(repo_root):
    return reference_module(problem4.SPEC, repo_root)


def variant(source_nb, edits=(), student_code=None, name="variant"):
    return kernel_module(problem4, source_nb, edits, student_code, name=name)


causes = likely_causes
run_check = run_printing_check


# ---- the reference passes every graded cell, hidden ones included (as verify_worker runs them) ----


@pytest.mark.parametrize("test_id", [t for t, _ in graded_cells(SOURCE)])
def test_reference_passes_graded_cell(reference, repo_root, test_id, capsys):
    code = dict(graded_cells(SOURCE))[test_id]
    run_graded_cell(reference, test_id, code)
    out = capsys.readouterr().out
    if test_id == "test_performance":
        assert "earns 100% of 2 points" in out, out
    else:
        assert "FAIL" not in out and "All" in out and "cases passed" in out, out


def test_graded_cells_are_causal_and_cover_the_diagonal_edges(repo_root):
    """Every value case is causal; together they cover L = 1, L < BLOCK_M, L one past a block,
    L not a multiple of BLOCK_N, several B and H, every head dim, both dtypes and every layout."""
    cases = []
    for _, code in graded_cells(SOURCE, performance=False):
        body = code.split("flash_attention_causal, [", 1)[1].rsplit("]", 1)[0]
        cases += eval("[" + body + "]", {"Case": Case})
    assert all(c.causal for c in cases)
    lengths = {c.L for c in cases}
    assert 1 in lengths and any(1 < n < 128 for n in lengths) and 129 in lengths
    assert any(n % 64 and n > 128 for n in lengths)
    assert {c.D for c in cases} == {16, 32, 64, 128}
    assert {c.dtype for c in cases} == {"float16", "bfloat16"}
    assert {c.layout for c in cases} == {"contiguous", "bshd", "strided_d"}
    assert any(c.B > 1 and c.H > 1 for c in cases)


def test_the_sample_scores_add_up(repo_root):
    """expected_points follow the cells' points: the visit checks are 2 of the 10."""
    points = {gid: cell_by_id(read(repo_root / SOURCE), gid).metadata.nbgrader.points
              for gid, _ in graded_cells(SOURCE, performance=False)}
    visit_points = sum(p for gid, p in points.items() if "block_skipping" in gid)
    assert sum(points.values()) == 10 and visit_points == 2
    by_name = {s.name: s for s in SAMPLES}
    assert by_name["skip_nothing"].expected_points == 10 - visit_points
    for name in ("diagonal_offset", "no_causal_mask"):   # wrong values, right visits
        assert by_name[name].expected_points == visit_points
    assert by_name["diagonal_twice"].expected_points == 0  # wrong values and too many visits


# ---- each sample's mistake gets its cause, in-process ----

VALUE_CASES = [Case(1, 2, 200, 32, seed=3, causal=True)]
VISIT_CASES = [Case(1, 2, 300, 16, seed=4, causal=True)]


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.edits], ids=lambda s: s.name)
def test_each_sample_mistake_is_named(source_nb, sample, capsys):
    module = variant(source_nb, sample.edits, name=sample.name)
    fn = module.flash_attention_causal
    ok_values, found_values, out_values = run_check(
        lambda: problem4.assert_cases(fn, VALUE_CASES, diagnoses=problem4.causal_diagnoses(fn)), capsys)
    ok_visits, found_visits, out_visits = run_check(lambda: problem4.assert_block_visits(fn, VISIT_CASES), capsys)
    assert sample.expected_cause in causes(found_values + found_visits), out_values + out_visits
    # The right values mean full points there; only the skipping check may tell them apart.
    assert ok_values == (sample.name == "skip_nothing"), out_values
    assert ok_visits == (sample.name in ("diagonal_offset", "no_causal_mask")), out_visits


def test_untouched_cell_says_not_implemented(repo_root, source_nb, capsys):
    stub = cell_by_id(read(repo_root / RELEASED), problem4.SPEC.student_cell).source
    module = variant(source_nb, student_code=stub, name="untouched")
    fn = module.flash_attention_causal
    ok_values, found_values, out_values = run_check(lambda: problem4.assert_cases(fn, VALUE_CASES[:1]), capsys)
    ok_visits, found_visits, out_visits = run_check(lambda: problem4.assert_block_visits(fn, VISIT_CASES), capsys)
    assert not ok_values and not ok_visits
    assert causes(found_values) == {"not_implemented"} and causes(found_visits) == {"not_implemented"}
    assert "Traceback" not in out_values + out_visits


# ---- the block-visit check ----

def test_visit_counts_of_the_reference_are_the_causal_minimum(reference, runtime):
    for n, d in ((1, 16), (64, 32), (128, 64), (129, 64), (300, 128)):
        q, k, v = make_qkv(Case(2, 1, n, d, causal=True), device=runtime.device)
        block_m, block_n = problem4.block_sizes(reference.flash_attention_causal, q)
        n_q = -(-n // block_m)
        counter = torch.zeros(2 * n_q, dtype=torch.int32, device=runtime.device)
        reference.flash_attention_causal(q, k, v, _visits=counter)
        need = minimal_visits(n, block_m, block_n, causal=True)
        assert counter.view(2, n_q).tolist() == [need, need]
        # Without a counter the kernel does not count (and still computes the same thing).
        o, _ = reference.flash_attention_causal(q, k, v)
        assert torch.equal(o, reference.flash_attention_causal(q, k, v, _visits=counter)[0])


@pytest.mark.parametrize("group", [1, 2, 3])
def test_every_query_block_is_computed_once_whatever_the_head_grouping(reference, runtime, group):
    # The launch order interleaves heads in groups (the last one smaller when the group size does
    # not divide B*H): each (head, query block) must still get exactly one program.
    case = Case(5, 1, 300, 32, causal=True)
    q, k, v = make_qkv(case, device=runtime.device)
    expected, _ = reference.flash_attention_causal(q, k, v)
    block_m, block_n = problem4.block_sizes(reference.flash_attention_causal, q)
    n_q = -(-300 // block_m)
    counter = torch.zeros(5 * n_q, dtype=torch.int32, device=runtime.device)
    o, _ = reference.flash_attention_causal(q, k, v, _visits=counter, heads_per_group=group)
    assert counter.view(5, n_q).tolist() == [minimal_visits(300, block_m, block_n, causal=True)] * 5
    assert torch.equal(o, expected)


def test_visit_check_fails_a_kernel_that_skips_nothing(source_nb, capsys):
    sample = next(s for s in SAMPLES if s.name == "skip_nothing")
    fn = variant(source_nb, sample.edits, name="skip_nothing").flash_attention_causal
    passed, found, out = run_check(lambda: problem4.assert_block_visits(fn, [Case(1, 1, 300, 32, causal=True)]),
                                   capsys)
    assert not passed
    # 3 query blocks of 128, 5 key blocks of 64: 15 visits without skipping, 2 + 4 + 5 = 11 with.
    assert "the kernel visits 15 key blocks, a causal kernel needs 11: the blocks above the diagonal are not skipped" \
        in out, out
    assert causes(found) == {"blocks_not_skipped"}


def test_visit_check_passes_the_reference_and_says_what_it_counted(reference, capsys):
    passed, _, out = run_check(lambda: problem4.assert_block_visits(
        reference.flash_attention_causal, [Case(1, 2, 300, 32, causal=True)]), capsys)
    assert passed, out
    assert "11 key-block visits per head" in out and "non-causal: 15" in out


@pytest.mark.parametrize("counts,code", [
    ([[2, 4, 5]], None),
    ([[5, 5, 5]], "blocks_not_skipped"),
    ([[3, 5, 5]], "extra_block_visits"),
    ([[2, 4, 4]], "missing_block_visits"),
    ([[0, 0, 0]], "missing_block_visits"),
    ([[2, 4, 5], [2, 5, 5]], "extra_block_visits"),   # only the second head is off
])
def test_visits_finding_reads_the_counts(counts, code):
    finding = problem4.visits_finding(torch.tensor(counts), 300, 128, 64)
    assert (finding.code if finding else None) == code


def test_visit_check_needs_the_launch_config(reference, runtime):
    def bare(q, k, v, _visits=None):
        return reference.flash_attention_causal(q, k, v, _visits=_visits)

    result = run_case(bare, Case(1, 1, 64, 16, causal=True), runtime, check_output=False, check_lse=False,
                      extra_checks=[problem4.block_visit_check(bare)])
    assert [f.code for f in result.findings] == ["no_launch_config"]


def test_a_mask_with_its_two_values_swapped_is_named_inverted(source_nb, capsys):
    """tl.where(allowed, -inf, s) keeps, in the diagonal block, only the keys after the query (and
    leaves NaN in the rows that see none of them first): the two values of the mask swapped."""
    mask = 's = tl.where(key_idx[None, :] <= query_idx[:, None], s, float("-inf"))'
    swapped = 's = tl.where(key_idx[None, :] <= query_idx[:, None], float("-inf"), s)'
    fn = variant(source_nb, ((mask, swapped),), name="mask_inverted").flash_attention_causal
    ok, found, out = run_check(lambda: problem4.assert_cases(fn, VALUE_CASES, diagnoses=problem4.causal_diagnoses(fn)),
                               capsys)
    assert not ok and causes(found) == {"mask_inverted"}, out


# ---- the float64 re-enactment is the kernel's own arithmetic ----

REENACTED = [
    ("diagonal_offset", "correct", "strict"),
    ("no_causal_mask", "correct", "none"),
    ("diagonal_twice", "diagonal_twice", "causal"),
]


@pytest.mark.parametrize("sample_name,ranges,mask", REENACTED, ids=[r[0] for r in REENACTED])
@pytest.mark.parametrize("n", [1, 100, 200, 300])
def test_reenactment_matches_the_faulty_kernels(source_nb, runtime, sample_name, ranges, mask, n):
    sample = next(s for s in SAMPLES if s.name == sample_name)
    fn = variant(source_nb, sample.edits, name=sample_name).flash_attention_causal
    q, k, v = make_qkv(Case(1, 2, n, 32, seed=n, causal=True), device=runtime.device)
    o = fn(q, k, v)[0].double()
    sim = problem4.reenact(q, k, v, 128, 64, ranges, mask)
    assert problem4._same(o, sim, 2e-3, 2e-3)


def test_reenactment_of_the_right_kernel_is_the_reference():
    q, k, v = make_qkv(Case(2, 2, 200, 16, causal=True))
    ref, _ = attention_reference(q, k, v, is_causal=True)
    for ranges in ("correct", "all_keys"):
        assert torch.allclose(problem4.reenact(q, k, v, 128, 64, ranges, "causal"), ref, atol=1e-12)


@pytest.mark.parametrize("ranges,mask,code", [
    ("correct", "one_ahead", "diagonal_offset"),
    ("correct", "reversed", "mask_reversed"),
    ("correct", "inverted", "mask_inverted"),
    ("block_behind", "causal", "query_block_offset"),
    ("block_ahead", "causal", "query_block_offset"),
    ("block_n_units", "causal", "block_units"),
    ("all_keys", "none", "no_causal_mask"),
])
def test_each_reenacted_mistake_is_named(reference, ranges, mask, code):
    """A kernel whose output is exactly the re-enacted mistake gets that mistake's name."""
    case = Case(1, 2, 300, 32, seed=5, causal=True)
    q, k, v = make_qkv(case)
    o = problem4.reenact(q, k, v, 128, 64, ranges, mask).to(q.dtype).double()
    ref, _ = attention_reference(q, k, v, is_causal=True)
    found = problem4.causal_diagnoses(reference.flash_attention_causal)[0](o, q, k, v, ref, case)
    assert code in [f.code for f in found], found


def test_bad_inputs_raise_value_errors(reference, runtime):
    q, k, v = make_qkv(Case(1, 1, 64, 16), device=runtime.device)
    with pytest.raises(ValueError, match="as many keys as queries"):
        reference.flash_attention_causal(q, k[:, :, :32], v[:, :, :32])
    with pytest.raises(ValueError, match="dtype"):
        reference.flash_attention_causal(q.float(), k.float(), v.float())
    with pytest.raises(ValueError, match="int32"):
        reference.flash_attention_causal(q, k, v, _visits=torch.zeros(1, dtype=torch.int64))


def test_benchmark_explains_why_it_does_nothing_on_the_cpu(reference, runtime, capsys, monkeypatch):
    monkeypatch.setenv("COURSE_GRADING", "1")
    assert problem4.benchmark(reference.flash_attention_causal) is None
    assert "skipped while grading" in capsys.readouterr().out
    if runtime.interpreter:
        monkeypatch.delenv("COURSE_GRADING")
        assert problem4.benchmark(reference.flash_attention_causal) is None
        assert "No GPU here" in capsys.readouterr().out


# ---- on a GPU: long sequences in bfloat16 ----

GPU_CASES = [Case(1, 2, 4096, 64, "bfloat16", seed=60, causal=True),
             Case(2, 2, 1000, 128, "bfloat16", seed=61, causal=True),
             Case(1, 2, 4097, 64, "bfloat16", "bshd", seed=62, causal=True),
             Case(1, 2, 4097, 128, "float16", seed=63, causal=True)]


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: c.label())
def test_gpu_long_sequences(reference, runtime, case, capsys):
    fn = reference.flash_attention_causal
    results = [run_case(fn, case, runtime, diagnoses=problem4.causal_diagnoses(fn))]
    results += problem4.run_block_visits(fn, [case])
    out = capsys.readouterr().out
    assert all(r.passed for r in results), out + "\n".join(line for r in results for line in r.lines())
    assert not results[0].note, results[0].note  # a GPU runs bfloat16 as bfloat16


@pytest.mark.gpu
def test_gpu_sample_mistakes_are_named(source_nb, runtime):
    case = Case(1, 2, 1000, 64, "bfloat16", seed=64, causal=True)
    for sample in (s for s in SAMPLES if s.edits and s.name != "skip_nothing"):
        fn = variant(source_nb, sample.edits, name=sample.name).flash_attention_causal
        result = run_case(fn, case, runtime, diagnoses=problem4.causal_diagnoses(fn))
        assert sample.expected_cause in [f.code for f in result.findings], "\n".join(result.lines())
