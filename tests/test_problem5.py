"""Problem 5 (grouped-query attention): the reference passes every graded cell, each sample's
mistake is named, the K/V-copy check cannot be fooled by the usual ways of repeating K/V
(the notebooks themselves: tests/test_notebooks.py)."""

import pytest
import torch

from autograder.checks import run_case
from autograder.grading.sample_sets.problem5 import SAMPLES
from autograder.inputs import Case
from autograder.notebook_code import cell_by_id, read
from autograder.problems import problem5, reference_module
from tests.helpers import graded_cells, kernel_module, likely_causes, run_graded_cell, run_printing_check

SOURCE = "solutions/problem5/problem5.ipynb"
RELEASED = "notebooks/problem5/problem5.ipynb"


@pytest.fixture(scope="module")
def source_nb(repo_root):
    return read(repo_root / SOURCE)


@pytest.fixture(scope="module")
def reference(repo_root):
    return reference_module(problem5.SPEC, repo_root)


def variant(source_nb, edits=(), student_code=None, extra="", name="variant"):
    return kernel_module(problem5, source_nb, edits, student_code, extra, name=name)


causes = likely_causes
run_check = run_printing_check


# ---- the reference passes every graded cell, hidden ones included (as verify_worker runs them) ----


@pytest.mark.parametrize("test_id", [t for t, _ in graded_cells(SOURCE)])
def test_reference_passes_graded_cell(reference, repo_root, test_id, capsys):
    code = dict(graded_cells(SOURCE))[test_id]
    run_graded_cell(reference, test_id, code)
    out = capsys.readouterr().out
    assert "FAIL" not in out and ("All" in out), out


def test_graded_cells_cover_every_group_size_and_hold_a_telling_case(repo_root):
    """Each attention test has a case with Hkv > 1 and Hq > Hkv (where every mapping mistake shows),
    and together they cover Hq / Hkv in {1, 2, 4, 8}."""
    ratios = set()
    for test_id, code in graded_cells(SOURCE):
        if "assert_gqa_cases" not in code:
            continue
        cases = eval("[" + code.split("flash_attention_gqa, [", 1)[1].rsplit("]", 1)[0] + "]", {"Case": Case})
        ratios |= {c.H // c.heads_kv for c in cases}
        assert any(c.heads_kv > 1 and c.H > c.heads_kv for c in cases), test_id
    assert {1, 2, 4, 8} <= ratios


# ---- each sample's mistake gets its cause, in-process ----

ATTENTION_CASES = [Case(1, 4, 128, 64, H_kv=2), Case(1, 6, 64, 32, H_kv=3, seed=1)]


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.edits or s.extra_cell], ids=lambda s: s.name)
def test_each_sample_mistake_is_named(source_nb, sample, capsys):
    module = variant(source_nb, sample.edits, extra=sample.extra_cell, name=sample.name)
    ok_cases, found_cases, out_cases = run_check(
        lambda: problem5.assert_gqa_cases(module.flash_attention_gqa, ATTENTION_CASES), capsys)
    ok_order, found_order, out_order = run_check(
        lambda: problem5.assert_schedule(module.launch_schedule, [(2, 4, 2, 3)]), capsys)
    assert not (ok_cases and ok_order)
    assert sample.expected_cause in causes(found_cases + found_order), out_cases + out_order
    if sample.expected_cause.startswith("schedule"):
        assert ok_cases, out_cases        # right values, wrong order
    else:
        assert ok_order, out_order        # the order is right, the heads are not


def test_untouched_cell_says_not_implemented(repo_root, source_nb, capsys):
    stub = cell_by_id(read(repo_root / RELEASED), problem5.SPEC.student_cell).source
    module = variant(source_nb, student_code=stub, name="untouched")
    ok_cases, found_cases, out_cases = run_check(
        lambda: problem5.assert_gqa_cases(module.flash_attention_gqa, ATTENTION_CASES[:1]), capsys)
    ok_order, found_order, out_order = run_check(
        lambda: problem5.assert_schedule(module.launch_schedule, [(1, 2, 1, 2)]), capsys)
    assert not ok_cases and not ok_order
    assert causes(found_cases) == {"not_implemented"} and causes(found_order) == {"not_implemented"}
    assert "Traceback" not in out_cases + out_order


def test_the_sample_scores_add_up(repo_root):
    """expected_points: a mapping mistake or a K/V copy keeps only the schedule tests' points."""
    points = {gid: cell_by_id(read(repo_root / SOURCE), gid).metadata.nbgrader.points
              for gid, _ in graded_cells(SOURCE, performance=False)}
    schedule_points = sum(p for gid, p in points.items() if "schedule" in gid)
    assert sum(points.values()) == 10 and schedule_points == 2
    by_name = {s.name: s for s in SAMPLES}
    for name in ("kv_head_modulo", "kv_head_zero", "group_off_by_one"):
        assert by_name[name].expected_points == schedule_points
    # Its K/V copy is in a cell after the answer: the notebook names it, the judge grades the answer cell.
    assert by_name["repeat_kv_before_kernel"].expected_points == 10
    assert by_name["plain_launch_order"].expected_points == 10 - schedule_points


# ---- the K/V-copy check ----

def _repeat_interleave(k, g):
    return k.repeat_interleave(g, dim=1)


def _expand_reshape(k, g):
    b, h, n, d = k.shape
    return k[:, :, None].expand(b, h, g, n, d).reshape(b, h * g, n, d)


def _repeat(k, g):
    b, h, n, d = k.shape
    return k[:, :, None].repeat(1, 1, g, 1, 1).reshape(b, h * g, n, d)


def _index_select(k, g):
    return k.index_select(1, torch.arange(k.shape[1] * g, device=k.device) // g)


def _fancy_index(k, g):
    return k[:, torch.arange(k.shape[1] * g, device=k.device) // g]


def _cat(k, g):
    return torch.cat([k[:, j:j + 1] for j in range(k.shape[1]) for _ in range(g)], dim=1)


def _filled_buffer(k, g):
    b, h, n, d = k.shape
    out = torch.empty(b, h * g, n, d, dtype=k.dtype, device=k.device)
    for j in range(h * g):
        out[:, j] = k[:, j // g]
    return out


REPEATS = [_repeat_interleave, _expand_reshape, _repeat, _index_select, _fancy_index, _cat, _filled_buffer]


@pytest.mark.parametrize("layout", ["contiguous", "bshd"])
@pytest.mark.parametrize("repeat", REPEATS, ids=lambda f: f.__name__.strip("_"))
def test_kv_copy_check_catches_every_way_of_repeating(reference, runtime, repeat, layout):
    def repeated(q, k, v):
        g = q.shape[1] // k.shape[1]
        return reference.flash_attention_gqa(q, repeat(k, g), repeat(v, g))

    watched = problem5._KVWatch(repeated)
    result = run_case(watched, Case(1, 4, 64, 16, layout=layout, H_kv=2), runtime, extra_checks=(watched.check,))
    assert not result.passed and [f.code for f in result.findings] == ["kv_repeated"], "\n".join(result.lines())


@pytest.mark.parametrize("case", [Case(1, 4, 64, 16, H_kv=2), Case(1, 4, 64, 16, "float16", "bshd", H_kv=1),
                                  Case(1, 2, 64, 16, H_kv=2)], ids=lambda c: c.label())
def test_kv_copy_check_passes_the_reference_and_equal_size_copies(reference, runtime, case):
    def contiguous_first(q, k, v):
        # A same-size copy (e.g. making a (B, L, H, D) view contiguous) is not a repeat.
        return reference.flash_attention_gqa(q.contiguous(), k.contiguous(), v.contiguous())

    for fn in (reference.flash_attention_gqa, contiguous_first):
        watched = problem5._KVWatch(fn)
        result = run_case(watched, case, runtime, extra_checks=(watched.check,))
        assert result.passed, "\n".join(result.lines())


# ---- the diagnosis and the schedule check on their own ----

def test_an_arbitrary_wrong_mapping_is_reported_head_by_head(reference, runtime):
    def swapped_kv(q, k, v):
        return reference.flash_attention_gqa(q, k.flip(1), v.flip(1))  # views: no copy, wrong heads

    result = run_case(swapped_kv, Case(1, 4, 64, 16, H_kv=2), runtime, diagnoses=(problem5.diagnose_kv_heads,))
    assert [f.code for f in result.findings] == ["wrong_kv_head"]
    assert "0->1, 1->1, 2->0, 3->0" in result.findings[0].message


def test_schedule_findings_name_duplicates_and_out_of_range():
    want = problem5.expected_schedule(1, 4, 2, 2)
    assert problem5.schedule_findings(want, 1, 4, 2, 2) == []
    duplicated = [want[0]] + want[:-1]
    assert [f.code for f in problem5.schedule_findings(duplicated, 1, 4, 2, 2)] == ["schedule_not_bijective"]
    outside = want[:-1] + [(0, 4, 0)]
    assert [f.code for f in problem5.schedule_findings(outside, 1, 4, 2, 2)] == ["schedule_out_of_range"]
    shuffled = want[1:] + want[:1]
    assert [f.code for f in problem5.schedule_findings(shuffled, 1, 4, 2, 2)] == ["schedule_order"]


def test_reference_schedule_is_the_documented_order(reference):
    table = reference.launch_schedule(2, 8, 2, 3).tolist()
    assert [tuple(r) for r in table] == problem5.expected_schedule(2, 8, 2, 3)
    assert [tuple(r) for r in table[:4]] == [(0, 0, 0), (0, 1, 0), (0, 2, 0), (0, 3, 0)]


def test_head_group_picture_draws(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    fig = problem5.plot_head_groups(n_q_heads=8, n_kv_heads=2)
    fig.savefig(tmp_path / "groups.png")
    assert (tmp_path / "groups.png").stat().st_size > 10_000


def test_benchmark_explains_why_it_skips(reference, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_GRADING", "1")
    assert problem5.benchmark(reference.flash_attention_gqa) is None
    assert "skipped while grading" in capsys.readouterr().out
    monkeypatch.delenv("COURSE_GRADING")
    if not torch.cuda.is_available():
        assert problem5.benchmark(reference.flash_attention_gqa) is None
        assert "No GPU here" in capsys.readouterr().out


# ---- on a GPU: bf16, long sequences, every group size ----

GPU_CASES = [
    Case(2, 8, 4096, 128, "bfloat16", H_kv=2, seed=100),
    Case(1, 16, 8192, 64, "bfloat16", "bshd", H_kv=2, seed=101),
    Case(1, 8, 4099, 64, "bfloat16", H_kv=1, seed=102),
    Case(2, 32, 2048, 128, "bfloat16", H_kv=8, seed=103),
    Case(1, 8, 3001, 32, "bfloat16", "strided_d", H_kv=8, L_k=5000, seed=104),
    Case(1, 12, 2049, 16, "float16", H_kv=3, seed=105),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: c.label())
def test_gpu_long_sequences(reference, runtime, case):
    watched = problem5._KVWatch(reference.flash_attention_gqa)
    result = run_case(watched, case, runtime, extra_checks=(watched.check,), diagnoses=(problem5.diagnose_kv_heads,))
    assert result.passed and not result.note, "\n".join(result.lines())


@pytest.mark.gpu
def test_gpu_modulo_mapping_is_named(source_nb, runtime):
    sample = next(s for s in SAMPLES if s.name == "kv_head_modulo")
    module = variant(source_nb, sample.edits, name="gpu_modulo")
    result = run_case(module.flash_attention_gqa, Case(1, 8, 1024, 64, "bfloat16", H_kv=2), runtime,
                      diagnoses=(problem5.diagnose_kv_heads,))
    assert [f.code for f in result.findings] == ["kv_head_modulo"], "\n".join(result.lines())


@pytest.mark.gpu
def test_gpu_schedule_and_copy_check(reference, runtime, capsys):
    problem5.assert_schedule(reference.launch_schedule, [(2, 32, 8, 16), (1, 8, 1, 33)])

    def repeated(q, k, v):
        g = q.shape[1] // k.shape[1]
        return reference.flash_attention_gqa(q, _expand_reshape(k, g), _expand_reshape(v, g))

    watched = problem5._KVWatch(repeated)
    result = run_case(watched, Case(1, 8, 1024, 64, "bfloat16", H_kv=2), runtime, extra_checks=(watched.check,))
    assert [f.code for f in result.findings] == ["kv_repeated"]
