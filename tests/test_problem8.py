"""Problem 8 (the backward of GQA + window + sinks): the reference passes every graded cell, each
sample's mistake is named, the points each sample deserves follow from the cells' cases, the float64
re-enactment is exact and names each mistake, and the tile walks visit each visible pair once and
no tile without one. The kernels run under the interpreter at small shapes; the rest is plain Python."""
import ast

import pytest
import torch

from autograder import benchmark as bench
from autograder.checks import GRAD_TOLERANCES, run_grad_case
from autograder.grading.sample_sets.problem8 import SAMPLES
from autograder.inputs import Case, make_grad, make_qkv
from autograder.notebook_code import cell_by_id, read
from autograder.problems import problem8, reference_module
from autograder.references import attention_grads_reference, attention_mask
from tests.helpers import graded_cells, kernel_module, run_graded_cell, run_printing_check

SOURCE = "solutions/problem8/problem8.ipynb"
RELEASED = "notebooks/problem8/problem8.ipynb"
# One case where every mistake shows: a group of 2, a window that hides keys, sinks behind it.
MISTAKE_CASE = Case(1, 4, 80, 16, H_kv=2, window=8, sink=20, seed=5)
INTERPRETER_TILES = (16, 32, 32, 16)


@pytest.fixture(scope="module")
def source_nb(repo_root):
    return read(repo_root / SOURCE)


@pytest.fixture(scope="module")
def reference(repo_root):
    return reference_module(problem8.SPEC, repo_root)


def codes(result):
    return [f.code for f in result.findings]


def cell_cases():
    """{grade id: (the check it calls, the cases it checks)}, read from the source notebook."""
    found = {}
    for gid, code in graded_cells(SOURCE, performance=False):
        call = next(n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call)
                    and getattr(n.func, "id", "") in ("assert_backward_cases", "check_visits"))
        found[gid] = call.func.id, eval(compile(ast.Expression(call.args[1]), gid, "eval"), {"Case": Case})
    return found


# ---- the reference passes every graded cell, hidden ones included (as the judge runs them) ----

def test_reference_passes_every_graded_cell(reference, capsys):
    """The performance cell is left to the Ray class, which grades the reference with every cell."""
    for gid, code in graded_cells(SOURCE, performance=False):
        passed, verdicts, out = run_printing_check(lambda gid=gid, code=code: run_graded_cell(reference, gid, code),
                                                     capsys)
        assert passed and verdicts and all(v.passed for v in verdicts), f"{gid}:\n{out}"


def test_graded_cases_cover_what_the_chapter_promises():
    cases = [c for check, cs in cell_cases().values() if check == "assert_backward_cases" for c in cs]
    assert 1 in {c.L for c in cases} and any(c.L % 16 for c in cases)
    assert {c.D for c in cases} == {16, 32, 64, 128} and {c.dtype for c in cases} == {"float16", "bfloat16"}
    assert {c.layout for c in cases} == {"contiguous", "bshd", "strided_d"}
    assert {c.grad_layout for c in cases} >= {"bshd", "strided_d"}
    assert {c.H // (c.H_kv or c.H) for c in cases} >= {1, 2, 4, 8} and any(c.B > 1 and c.H > 1 for c in cases)
    assert any(c.window == 1 for c in cases) and any(c.window >= c.L for c in cases)
    assert any(c.sink == 0 for c in cases) and any(c.sink > c.L for c in cases)


def test_the_sample_scores_add_up(source_nb):
    """What each sample deserves follows from the cells' cases: a value mistake loses every gradient
    cell holding a case where it shows (MISTAKES' own condition) and no visit cell; a walk mistake
    loses every cell whose counts (or values) it changes at the interpreter's tiles."""
    points = {gid: cell_by_id(source_nb, gid).metadata.nbgrader.points for gid, _ in graded_cells(SOURCE)}
    assert sum(points.values()) == 12 and points["test_performance"] == 2
    cells = cell_cases()
    bm, bn = INTERPRETER_TILES[:2]

    def visits_change(case, variant):
        w, s = problem8._window_sink(case)
        return problem8.visit_counts(case.L, w, s, bm, bn, 1, variant) != problem8.minimal_visits(case.L, w, s, bm, bn)

    def deserved(value_code=None, variant=None):
        total = 0
        for gid, (check, cases) in cells.items():
            if check == "assert_backward_cases":
                lost = value_code and any(problem8.MISTAKES[value_code][2](c) for c in cases)
            else:
                lost = variant and any(visits_change(c, variant) for c in cases)
                lost = lost or (value_code == "group_not_summed" and any(c.H_kv and c.H_kv < c.H for c in cases))
            total += 0 if lost else points[gid]
        return total

    by_name = {s.name: s for s in SAMPLES}
    walks = {"sink_visited_twice": "sink_twice", "window_to_end": "window_to_end"}
    for sample in SAMPLES:
        if not sample.edits:
            continue
        code = None if sample.name == "window_to_end" else sample.expected_cause
        assert deserved(code, walks.get(sample.name)) == sample.expected_points, sample.name
    assert by_name["correct"].expected_points == 10 and by_name["untouched"].expected_points == 0
    assert [s.name for s in SAMPLES][:3] == ["correct", "untouched", "group_not_summed"]


# ---- each sample's mistake is named, in-process ----

@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.edits], ids=lambda s: s.name)
def test_each_sample_mistake_is_named(runtime, source_nb, sample):
    fn = kernel_module(problem8, source_nb, sample.edits, name=sample.name).flash_attention_grads
    if sample.name == "window_to_end":  # right gradients from too many tiles: the visit count names it
        record: dict = {}
        # Key blocks whose window ends before L, with the interpreter's tiles and a GPU's 64-key ones.
        case = Case(1, 2, 200, 16, H_kv=1, window=8, sink=20)
        q, k, v = make_qkv(case, runtime.device)
        fn(q, k, v, make_grad(case, runtime.device), window_size=8, sink_size=20, _visits=record)
        counts = record["counts"].reshape(1, -1).tolist()
        found = problem8.visit_findings(counts, case.L, record["block_m"], record["block_n"], 8, 20, 2)
        assert [f.code for f in found] == [sample.expected_cause] and "window loop runs to the end" in found[0].message
        return
    result = run_grad_case(fn, MISTAKE_CASE, runtime, diagnoses=problem8.backward_diagnoses(fn))
    assert not result.passed and codes(result) == [sample.expected_cause], "\n".join(result.lines())
    if sample.name == "dk_no_scale":   # the verdict says which gradient is wrong, and where
        assert "(dQ, dV right)" in result.summary and result.where.startswith("dK first at batch 0, head "), \
            result.summary


def test_a_window_one_query_short_loses_the_hidden_visits_point(runtime, source_nb, capsys):
    """The H200 mutation run's survivor: `window_hi` one query short skips the query block that only
    the last query of a key block's window starts, which happens when W - 2 is a multiple of the
    query tile (W = 2 with any tile). Its gradients differ only in one key's row per block, at shapes
    the other cells do not reach; the hidden visit count with W = 2 catches it."""
    edit = ("window_hi = tl.minimum(k_end - 1 + window_size, seq_len)",
            "window_hi = tl.minimum(k_end - 2 + window_size, seq_len)")
    module = kernel_module(problem8, source_nb, (edit,), name="window_one_short")
    code = dict(graded_cells(SOURCE, performance=False))["test_hidden_visits"]
    passed, verdicts, out = run_printing_check(lambda: run_graded_cell(module, "test_hidden_visits", code), capsys)
    wrong = [v for v in verdicts if not v.passed]
    assert not passed and [v.case for v in wrong] == [Case(1, 1, 96, 16, window=2, sink=0)], out
    assert [f.code for f in wrong[0].findings] == ["too_few_visits"], out


def test_any_wrong_delta_is_named_from_the_gradients(runtime, source_nb):
    """The H200 mutation run's `o / do` Delta, which no re-enactment computes, is named from the
    gradients: dV right, dQ and dK (summed over the group) fit one wrong number per query row."""
    edit = ("delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)",
            "delta = tl.sum(o.to(tl.float32) / do.to(tl.float32), axis=1)")
    fn = kernel_module(problem8, source_nb, (edit,), name="wrong_delta").flash_attention_grads
    case = Case(1, 4, 80, 16, H_kv=2, window=8, sink=20, seed=5)
    result = run_grad_case(fn, case, runtime, diagnoses=problem8.backward_diagnoses(fn))
    assert not result.passed and codes(result) == ["delta_wrong"], "\n".join(result.lines())


def test_delta_added_instead_of_subtracted_is_named(runtime, source_nb):
    edit = ("ds = p * (dp - delta[:, None])", "ds = p * (dp + delta[:, None])")
    fn = kernel_module(problem8, source_nb, (edit,), name="delta_sign").flash_attention_grads
    result = run_grad_case(fn, MISTAKE_CASE, runtime, diagnoses=problem8.backward_diagnoses(fn))
    assert not result.passed and codes(result) == ["delta_sign"], "\n".join(result.lines())


def test_untouched_cell_says_not_implemented(repo_root, runtime, source_nb):
    stub = cell_by_id(read(repo_root / RELEASED), problem8.SPEC.student_cell).source
    assert stub.count("raise NotImplementedError()") == 7
    fn = kernel_module(problem8, source_nb, student_code=stub, name="untouched").flash_attention_grads
    result = run_grad_case(fn, Case(1, 1, 16, 16, window=4, sink=1), runtime)
    assert codes(result) == ["not_implemented"] and "Traceback" not in "\n".join(result.lines())


def test_reference_error_is_far_inside_the_tolerance(reference, runtime):
    """Measured as problem 7's (docs/backward-tolerances.md): max |g - ref| / (1 + |ref|) under a third
    of the tolerance, on a group of 4 whose sinks every query sees."""
    case = Case(1, 4, 96, 64, H_kv=1, window=32, sink=8, seed=9)
    q, k, v = make_qkv(case, runtime.device)
    do = make_grad(case, runtime.device)
    got = reference.flash_attention_grads(q, k, v, do, window_size=32, sink_size=8)
    for g, r in zip(got, attention_grads_reference(q, k, v, do, **case.mask_kwargs), strict=True):
        assert float(((g.double() - r).abs() / (1 + r.abs())).max()) < GRAD_TOLERANCES[q.dtype].atol / 3


def test_bad_arguments_get_a_clear_error(reference, runtime):
    q, k, v = make_qkv(Case(1, 2, 16, 16, H_kv=1, window=4), runtime.device)
    do = make_grad(Case(1, 2, 16, 16), runtime.device)
    fn = reference.flash_attention_grads
    with pytest.raises(ValueError, match="causal=False is problem 7's"):
        fn(q, k, v, do, causal=False)
    with pytest.raises(ValueError, match="window_size >= 1"):
        fn(q, k, v, do, window_size=0)
    with pytest.raises(ValueError, match="do must be like q"):
        fn(q, k, v, do[:, :1], window_size=4)


# ---- the float64 re-enactment ----

def _float64_inputs(case):
    q, k, v = make_qkv(case)
    return q, k, v, make_grad(case)


def test_reenactment_without_mistakes_is_float64_autograd():
    case = Case(2, 4, 45, 16, H_kv=2, window=7, sink=9, seed=6)
    q, k, v, do = _float64_inputs(case)
    want = attention_grads_reference(q, k, v, do, **case.mask_kwargs)
    for got, ref in zip(problem8.reenact_backward(q, k, v, do, 7, 9, INTERPRETER_TILES), want, strict=True):
        torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("code", sorted(problem8.MISTAKES))
def test_each_reenacted_mistake_changes_the_gradients_and_is_named(reference, code):
    """Gradients that are exactly a re-enacted mistake (rounded to float16, as a kernel's are) get that
    mistake's name, and no switch of the re-enactment is a no-op on a case where it shows."""
    case = MISTAKE_CASE
    assert problem8.MISTAKES[code][2](case)
    q, k, v, do = _float64_inputs(case)
    sim = problem8.reenact_backward(q, k, v, do, 8, 20, INTERPRETER_TILES, **problem8.switches_for(code, 16))
    ref = dict(zip(("dq", "dk", "dv"), attention_grads_reference(q, k, v, do, **case.mask_kwargs), strict=True))
    got = {name: g.to(torch.float16).double() for name, g in zip(("dq", "dk", "dv"), sim, strict=True)}
    assert any((got[n] - ref[n]).abs().max() > 0.1 for n in got)
    found = problem8.backward_diagnoses(reference.flash_attention_grads)[0](got, q, k, v, do, ref, case)
    assert [f.code for f in found] == [code], found


# ---- the tile walks ----

WALKS = [(n, w, s, bm, bn) for n in (1, 31, 64, 97) for w, s in ((1, 0), (5, 3), (16, 40), (33, 1), (200, 0), (4, 300))
         for bm, bn in ((16, 32), (32, 32), (16, 16))]


def test_the_right_walks_fold_in_each_visible_pair_once_and_visit_no_empty_tile():
    """The dK/dV walk (your ranges, cut as the kernel cuts them) and the dQ walk add each visible
    (query, key) pair exactly once and no hidden one, and the dK/dV walk visits exactly the tiles
    that hold a visible pair: for lengths inside and across tiles, W = 1 to W > L, S = 0 to S > L."""
    for n, w, s, bm, bn in WALKS:
        mask = attention_mask(n, True, w, s).double()
        assert torch.equal(problem8.kv_weights(n, w, s, bm, bn), mask), (n, w, s, bm, bn)
        assert torch.equal(problem8.q_weights(n, w, s, bn, bm), mask), (n, w, s, bn, bm)
        assert problem8.visit_counts(n, w, s, bm, bn, 2) == problem8.minimal_visits(n, w, s, bm, bn, 2)


def test_visit_findings_name_each_wrong_walk():
    n, w, s, bm, bn = 97, 8, 20, 16, 32
    want = problem8.minimal_visits(n, w, s, bm, bn, 2)
    named = {}
    for variant in ("sink_twice", "window_to_end", "sink_for_all", "no_sink_loop"):
        counts = problem8.visit_counts(n, w, s, bm, bn, 2, variant)
        assert counts != want, variant
        named[variant] = [f.code for f in problem8.visit_findings([counts], n, bm, bn, w, s, 2)]
    assert named == {"sink_twice": ["sink_visited_twice"], "window_to_end": ["visits_outside_window"],
                     "sink_for_all": ["visits_outside_window"], "no_sink_loop": ["too_few_visits"]}
    one_head = [[c // 2 for c in want]]
    assert [f.code for f in problem8.visit_findings(one_head, n, bm, bn, w, s, 2)] == ["group_not_summed"]
    assert problem8.visit_findings([want, want], n, bm, bn, w, s, 2) == []


# ---- the picture and the benchmark ----

def test_picture_and_benchmark_table(tmp_path, capsys, reference, runtime, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    axes = problem8.plot_backward_programs(seq_len=320, window=72, sink=4, block=64)
    assert len(axes[0].texts) == 5 + 3 and len(axes[1].texts) == 1 + 3   # key blocks 0 and 1; query block 3
    rows = [{"impl": name, "B": 1, "Hq": 16, "Hkv": 4, "L": 4096, "D": 64, "W": 1024, "S": 4, "dtype": "bfloat16",
             "fwd_bwd_ms": ms * 3.5, "bwd_ms": ms * 2.5, "fwd_bwd_tflops": 1.0, "bwd_tflops": 2.0}
            for name, ms in (("your kernels", 1.0), ("FlexAttention", 1.5))]
    assert "1.50x" in problem8.format_table(rows).splitlines()[1]
    bench.plot_backward(rows, tmp_path / "p8.png")
    assert (tmp_path / "p8.png").stat().st_size > 1000
    monkeypatch.setenv("COURSE_GRADING", "1")
    assert problem8.benchmark(reference.flash_attention_window) is None
    assert "skipped while grading" in capsys.readouterr().out


def test_backward_flops_count_the_visible_pairs():
    assert problem8.backward_flops(2, 16, 64, 1000) == 2.5 * 4 * 2 * 16 * 64 * 1000


# ---- on a GPU: bfloat16, long sequences, every head dimension, the GPU's tiles ----

GPU_CASES = [Case(2, 8, 1000, 64, "bfloat16", H_kv=2, window=128, sink=4, seed=60),
             Case(1, 8, 4097, 128, "bfloat16", "bshd", H_kv=1, window=1024, sink=64, seed=61),
             Case(1, 4, 2048, 64, "float16", H_kv=4, window=2048, sink=0, seed=62),
             Case(1, 16, 777, 16, "bfloat16", "strided_d", H_kv=2, grad_layout="bshd", window=100, sink=70, seed=63),
             Case(1, 2, 1500, 32, "float16", H_kv=1, window=1, sink=1, seed=64),
             Case(1, 8, 1, 128, "bfloat16", H_kv=8, window=1, sink=0, seed=65)]


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: c.label())
def test_gpu_bf16_and_long_sequences(reference, runtime, case):
    fn = reference.flash_attention_grads
    result = run_grad_case(fn, case, runtime, diagnoses=problem8.backward_diagnoses(fn))
    assert result.passed and not result.note, "\n".join(result.lines())


@pytest.mark.gpu
def test_gpu_visits_and_sample_mistakes_are_named(source_nb, reference, runtime, capsys):
    visits = [Case(1, 4, 1000, 64, H_kv=2, window=128, sink=4), Case(1, 1, 777, 64, window=70, sink=200)]
    passed, _, out = run_printing_check(lambda: problem8.check_visits(reference.flash_attention_grads, visits), capsys)
    assert passed, out
    case = Case(1, 4, 300, 64, "bfloat16", H_kv=2, window=64, sink=80, seed=68)
    for sample in (s for s in SAMPLES if s.edits and s.name != "window_to_end"):
        fn = kernel_module(problem8, source_nb, sample.edits, name=f"gpu_{sample.name}").flash_attention_grads
        result = run_grad_case(fn, case, runtime, diagnoses=problem8.backward_diagnoses(fn))
        assert codes(result) == [sample.expected_cause], "\n".join(result.lines())


def test_the_spec_says_the_function_returns_gradients():
    spec = problem8.SPEC
    assert spec.direction == "backward" and spec.kernel_function == "flash_attention_grads"
    assert spec.performance_points == 2 and spec.timing.make_inputs is not None
