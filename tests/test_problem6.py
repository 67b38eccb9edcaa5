"""Problem 6 (sliding window + attention sinks): the reference passes every graded cell, each
sample's mistake is named, the visit check cannot be fooled
(the notebooks themselves: tests/test_notebooks.py)."""
import io
import os
from contextlib import redirect_stdout

import pytest
import torch

from autograder.block_visits import minimal_visits
from autograder.checks import CheckFailed, run_case
from autograder.grading.sample_sets.problem6 import SAMPLES
from autograder.inputs import Case, make_qkv
from autograder.notebook_code import cell_by_id, read
from autograder.problems import problem6, reference_module
from autograder.references import attention_reference, create_mask_bool
from tests.helpers import graded_cells, kernel_module, run_graded_cell

SOURCE = "solutions/problem6/problem6.ipynb"
RELEASED = "notebooks/problem6/problem6.ipynb"
# One input that every sample's mistake shows on: a window shorter than L, sinks that lie in the
# first program's window (so a double visit happens) and sinks after early queries.
CASE = Case(1, 2, 256, 32, H_kv=1, window=128, sink=4, seed=3)


@pytest.fixture(scope="module")
def source_nb(repo_root):
    return read(repo_root / SOURCE)


@pytest.fixture(scope="module")
def reference(repo_root):
    return reference_module(problem6.SPEC, repo_root)


def variant(source_nb, edits=(), student_code=None, name="variant"):
    return kernel_module(problem6, source_nb, edits, student_code, name=name)


def codes(findings):
    return [f.code for f in findings]


# ---------------------------------------------------------------------------------------------
# The reference against every graded cell, hidden ones included, as the clean re-run runs them.

@pytest.mark.parametrize("test", graded_cells(SOURCE), ids=lambda t: t[0])
def test_reference_passes_every_graded_cell(reference, test):
    gid, code = test
    out = io.StringIO()
    with redirect_stdout(out):
        run_graded_cell(reference, gid, code)  # raises CheckFailed on any failure
    assert "FAIL" not in out.getvalue() and "All " in out.getvalue()


# ---------------------------------------------------------------------------------------------
# The samples: each mistake is named in-process (values and visits), and the edits still apply.

def _all_codes(module, runtime):
    result = run_case(module.flash_attention_window, CASE, runtime, diagnoses=problem6.DIAGNOSES)
    q, k, v = make_qkv(CASE, device=runtime.device)
    record = {}
    module.flash_attention_window(q, k, v, **CASE.call_kwargs, _visits=record)
    counts = record["counts"].reshape(CASE.B * CASE.H, -1).tolist()
    visits = problem6.visit_findings(counts, CASE.L, record["block_m"], record["block_n"], CASE.window, CASE.sink)
    return result, codes(result.findings) + codes(visits)


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.edits], ids=lambda s: s.name)
def test_each_sample_mistake_is_named(source_nb, runtime, sample):
    module = variant(source_nb, sample.edits, name=sample.name)
    result, found = _all_codes(module, runtime)
    assert sample.expected_cause in found, "\n".join(result.lines())
    # The visit-only mistake keeps the right values; every other sample is wrong on this input.
    assert result.passed == (sample.expected_cause == "visits_all_blocks"), "\n".join(result.lines())


def test_samples_cover_the_required_mistakes():
    by_name = {s.name: s for s in SAMPLES}
    assert {"correct", "untouched", "window_off_by_one", "sink_visited_twice", "visits_all_blocks"} <= set(by_name)
    assert len(SAMPLES) >= 6
    assert by_name["correct"].expected_points == 10 and by_name["untouched"].expected_points == 0
    assert all(s.expected_cause for s in SAMPLES if s.name != "correct")


def test_untouched_answer_cell_says_not_implemented(repo_root, source_nb, runtime):
    stub = cell_by_id(read(repo_root / RELEASED), problem6.SPEC.student_cell).source
    module = variant(source_nb, student_code=stub, name="untouched")
    result = run_case(module.flash_attention_window, CASE, runtime, diagnoses=problem6.DIAGNOSES)
    assert codes(result.findings) == ["not_implemented"]
    assert "Traceback" not in "\n".join(result.lines())
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(CheckFailed, match="not implemented"):
        problem6.check_visits(module.flash_attention_window, [CASE])


# ---------------------------------------------------------------------------------------------
# The visit check: what the kernel reports against the minimum.

VISIT_CASES = [Case(1, 1, 300, 16, window=16, sink=64), Case(1, 1, 257, 16, window=128, sink=65)]


def test_visit_check_passes_the_reference(reference):
    out = io.StringIO()
    with redirect_stdout(out):
        problem6.check_visits(reference.flash_attention_window, VISIT_CASES)
    assert "All 2 cases visit exactly the blocks they need." in out.getvalue()


@pytest.mark.parametrize("name,finding", [("visits_all_blocks", "visits_all_blocks"),
                                          ("sink_visited_twice", "sink_visited_twice")])
def test_visit_check_fails_a_kernel_that_visits_too_much(source_nb, name, finding):
    sample = next(s for s in SAMPLES if s.name == name)
    module = variant(source_nb, sample.edits, name=name)
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(CheckFailed) as info:
        problem6.check_visits(module.flash_attention_window, VISIT_CASES)
    assert f"likely cause ({finding})" in out.getvalue()
    assert "visit the wrong blocks" in info.value.message


def test_visit_findings_name_each_pattern():
    n, bm, bn, w, s = 600, 128, 64, 100, 4
    right = minimal_visits(n, bm, bn, True, w, s)
    assert problem6.visit_findings([right], n, bm, bn, w, s) == []
    for variant_name, code in (("double_sink", "sink_visited_twice"), ("all_blocks", "visits_all_blocks"),
                               ("causal_walk", "window_not_skipped")):
        got = problem6.visit_counts(n, bm, bn, w, s, variant_name)
        assert got != right
        assert codes(problem6.visit_findings([right, got], n, bm, bn, w, s)) == [code]
    fewer = [c - 1 for c in right]
    assert codes(problem6.visit_findings([fewer], n, bm, bn, w, s)) == ["too_few_visits"]
    extra = right[:-1] + [right[-1] + 1]
    assert codes(problem6.visit_findings([extra], n, bm, bn, w, s)) == ["visits_outside_window"]


@pytest.mark.parametrize("block", [(128, 64), (64, 64), (64, 32), (16, 16), (128, 128)])
def test_the_right_ranges_visit_exactly_the_minimal_blocks(block):
    bm, bn = block
    for n in (1, 17, 64, 65, 200, 257, 300, 1000):
        for w in (1, 16, 63, 64, 65, 127, 128, 1000):
            for s in (0, 1, 4, 63, 64, 65, 2000):
                assert problem6.visit_counts(n, bm, bn, w, s) == minimal_visits(n, bm, bn, True, w, s), (n, w, s)


# ---------------------------------------------------------------------------------------------
# The re-enactment the diagnoses rest on.

@pytest.mark.parametrize("case", [Case(1, 2, 200, 32, window=16, sink=4), Case(1, 1, 257, 16, window=127, sink=65),
                                  Case(1, 2, 100, 16, H_kv=1, window=1000, sink=1),
                                  Case(1, 1, 90, 16, window=8, sink=500)], ids=lambda c: c.label())
def test_replay_without_a_mistake_is_the_reference(case):
    q, k, v = make_qkv(case)
    ref, _ = attention_reference(q, k, v, **case.mask_kwargs)
    for bm, bn in problem6.BLOCK_SHAPES:
        sim = problem6.replay(q, k, v, problem6.replay_weights(case.L, case.window, case.sink, bm, bn))
        torch.testing.assert_close(sim, ref, atol=1e-10, rtol=1e-10)


NARROW = Case(1, 2, 256, 32, H_kv=1, window=16, sink=4, seed=4)  # sinks far outside the later windows


def _returning(reference, case, output):
    """A function that launches the real kernel (so it counts as one) but returns `output`, made
    beforehand from the same seeded inputs (PyTorch ops inside the call would be caught)."""
    q0, k0, v0 = make_qkv(case)
    wrong = output(q0, k0, v0).to(q0.dtype)

    def fn(q, k, v, window_size, sink_size):
        o, lse = reference.flash_attention_window(q, k, v, window_size, sink_size)
        return wrong.clone(), lse
    return fn


@pytest.mark.parametrize("code,case,make", [
    ("sinks_ignored", CASE, lambda q, k, v: attention_reference(q, k, v, True, 128, 0)[0]),
    ("window_not_applied", CASE, lambda q, k, v: attention_reference(q, k, v, True)[0]),
    ("window_off_by_one", CASE, lambda q, k, v: attention_reference(q, k, v, True, 127, 4)[0]),
    ("sink_blocks_skipped", NARROW, lambda q, k, v: problem6.replay(
        q, k, v, problem6.replay_weights(NARROW.L, 16, 4, 128, 64, variant="no_sink_loop"))),
    ("future_sinks", NARROW, lambda q, k, v: problem6.replay(
        q, k, v, problem6.replay_weights(NARROW.L, 16, 4, 64, 64, mask="future_sinks"))),
    ("sinks_off_by_one", CASE, lambda q, k, v: attention_reference(q, k, v, True, 128, 3)[0]),
    ("window_ahead", NARROW, lambda q, k, v: problem6.replay(
        q, k, v, problem6.replay_weights(NARROW.L, 16, 4, 64, 32, mask="window_ahead"))),
    ("window_reversed", NARROW, lambda q, k, v: problem6.replay(
        q, k, v, problem6.replay_weights(NARROW.L, 16, 4, 128, 64, mask="window_reversed"))),
], ids=lambda x: x if isinstance(x, str) else "")
def test_re_enacted_mistakes_are_named(reference, runtime, code, case, make):
    result = run_case(_returning(reference, case, make), case, runtime, diagnoses=problem6.DIAGNOSES)
    assert not result.passed and codes(result.findings) == [code], "\n".join(result.lines())


# Comparisons of `visible` written the wrong way round, as the mutation score found them unnamed
# (docs/results/mutation/cpu-problem5-6-all): each is named by the real kernel's output.
@pytest.mark.parametrize("edit,code", [
    (("is_sink = (k < sink_size)", "is_sink = (k <= sink_size)"), "sinks_off_by_one"),
    (("in_window = (k <= q) & (k > q - window_size)", "in_window = (k >= q) & (k > q - window_size)"), "window_ahead"),
    (("in_window = (k <= q) & (k > q - window_size)", "in_window = (k <= q) & (k < q - window_size)"),
     "window_reversed"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_a_mask_comparison_written_the_wrong_way_is_named(source_nb, runtime, edit, code):
    module = variant(source_nb, (edit,), name=code)
    result = run_case(module.flash_attention_window, CASE, runtime, diagnoses=problem6.DIAGNOSES)
    assert not result.passed and codes(result.findings) == [code], "\n".join(result.lines())


def test_wrapper_rejects_impossible_arguments(reference, runtime):
    q, k, v = make_qkv(Case(1, 1, 32, 16), device=runtime.device)
    with pytest.raises(ValueError, match="window_size >= 1"):
        reference.flash_attention_window(q, k, v, window_size=0, sink_size=0)
    with pytest.raises(ValueError, match="Lq == Lk"):
        reference.flash_attention_window(q, k[:, :, :16], v[:, :, :16], window_size=4, sink_size=0)


def test_visible_pairs_counts_the_mask():
    for n, w, s in ((1, 1, 0), (100, 16, 4), (257, 128, 65), (64, 1000, 3), (90, 8, 500)):
        assert problem6.visible_pairs(n, w, s) == int(create_mask_bool(n, w, s).sum())


def test_benchmark_explains_why_it_does_not_run_here(reference, capsys, monkeypatch):
    monkeypatch.setenv("COURSE_GRADING", "1")
    assert problem6.benchmark(reference.flash_attention_window) is None
    assert "skipped while grading" in capsys.readouterr().out
    monkeypatch.delenv("COURSE_GRADING")
    if os.environ.get("TRITON_INTERPRET") == "1":
        assert problem6.benchmark(reference.flash_attention_window) is None
        assert "No GPU here" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# On a GPU: bf16 and long sequences, where the interpreter cannot go.

GPU_CASES = [
    Case(1, 4, 4096, 64, "bfloat16", H_kv=1, window=1000, sink=4, seed=60),
    Case(1, 2, 4096, 128, "bfloat16", "bshd", window=127, sink=64, seed=61),
    Case(2, 4, 3000, 64, "bfloat16", H_kv=2, window=128, sink=1, seed=62),
    Case(1, 2, 8191, 64, "bfloat16", window=4096, sink=65, seed=63),
    Case(1, 2, 2048, 32, "float16", "strided_d", window=1, sink=16, seed=64),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: c.label())
def test_gpu_long_windows_with_sinks(reference, runtime, case):
    result = run_case(reference.flash_attention_window, case, runtime, diagnoses=problem6.DIAGNOSES)
    assert result.passed, "\n".join(result.lines())


@pytest.mark.gpu
def test_gpu_block_visits_on_long_sequences(reference):
    out = io.StringIO()
    with redirect_stdout(out):
        problem6.check_visits(reference.flash_attention_window, GPU_CASES)
    assert "FAIL" not in out.getvalue()


@pytest.mark.gpu
def test_gpu_sink_twice_is_named_in_bf16(source_nb, runtime):
    sample = next(s for s in SAMPLES if s.name == "sink_visited_twice")
    module = variant(source_nb, sample.edits, name="gpu_sink_twice")
    case = Case(1, 2, 1024, 64, "bfloat16", window=256, sink=4, seed=65)
    result = run_case(module.flash_attention_window, case, runtime, diagnoses=problem6.DIAGNOSES)
    assert codes(result.findings) == ["sink_visited_twice"], "\n".join(result.lines())
