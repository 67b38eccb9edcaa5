"""Problem 1 (attention in PyTorch): the reference earns every point, each sample earns exactly
what it deserves with the cause it deserves, each typical mistake is named, the CPU memory tracker
counts what it should, and the student notebook draws its mask picture with the grader's function."""
from __future__ import annotations

import io
import re
import tracemalloc
from contextlib import redirect_stdout

import pytest
import torch

from autograder import references
from autograder.checks import CheckFailed, run_case
from autograder.grading.samples import SAMPLES, apply_edits
from autograder.grading.verify import answer_cell_violations, graded_test_cells
from autograder.inputs import Case
from autograder.kernel_module import import_kernel_module
from autograder.memory import PeakTensorMemory, peak_call_bytes
from autograder.notebook_code import cell_by_id, read, strip_markers
from autograder.problems import problem1, reference_module

SOURCE = "solutions/problem1/problem1.ipynb"
RELEASED = "notebooks/problem1/problem1.ipynb"
SAMPLE_SET = SAMPLES["problem1"]


@pytest.fixture(scope="module")
def source_nb(repo_root):
    return read(repo_root / SOURCE)


@pytest.fixture(scope="module")
def release_nb(repo_root):
    return read(repo_root / RELEASED)


@pytest.fixture(scope="module")
def reference(repo_root):
    return reference_module(problem1.SPEC, repo_root)


def points_of(nb) -> dict:
    return {c.metadata.nbgrader["grade_id"]: c.metadata.nbgrader["points"] for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")}


def submission_namespace(source_nb, release_nb, sample, name):
    """What the sample's notebook holds when the graded cells run: the imports cell, the answer cell
    (the solution after the sample's edits, or the untouched release) and any cell the student added."""
    if sample.untouched:
        answer = cell_by_id(release_nb, problem1.SPEC.student_cell).source
    else:
        answer = apply_edits(strip_markers(cell_by_id(source_nb, problem1.SPEC.student_cell).source), sample.edits)
    module = import_kernel_module(problem1.SPEC, release_nb, answer=answer, extra_cells=(sample.extra_cell,),
                                  name=f"sample_{name}")
    return {k: v for k, v in vars(module).items() if not k.startswith("__")}


def run_graded_cells(source_nb, namespace):
    """Run every graded cell, hidden tests included (as the clean re-run does), in a copy of
    `namespace`. Returns {grade_id: (passed, printed text)}."""
    results = {}
    for gid, code in graded_test_cells(source_nb):
        out = io.StringIO()
        try:
            with redirect_stdout(out):
                exec(compile(code, f"<{gid}>", "exec"), dict(namespace))
            results[gid] = (True, out.getvalue())
        except CheckFailed:
            results[gid] = (False, out.getvalue())
    return results


# --- the reference and the notebook's grading --------------------------------------------------


def test_points_total_ten_and_every_graded_cell_uses_the_problem_checks(source_nb):
    points = points_of(source_nb)
    assert sum(points.values()) == 10 and len(points) == 8
    for gid, code in graded_test_cells(source_nb):
        assert re.search(r"\bassert_(attention|masks|score_bytes)\(", code), gid


def test_reference_passes_every_graded_cell_hidden_included(source_nb, reference):
    namespace = {k: v for k, v in vars(reference).items() if not k.startswith("__")}
    results = run_graded_cells(source_nb, namespace)
    failed = {gid: text for gid, (ok, text) in results.items() if not ok}
    assert not failed, failed
    for gid, (_, text) in results.items():
        assert "PASS" in text and "FAIL" not in text, gid


def test_the_seeds_own_naive_attention_passes_every_attention_check(source_nb, reference):
    """The tolerances are not stricter than the seed's semantics: its float16-score version passes."""
    namespace = {k: v for k, v in vars(reference).items() if not k.startswith("__")}
    namespace["naive_attention"] = references.naive_attention
    results = run_graded_cells(source_nb, namespace)
    assert all(ok for ok, _ in results.values()), [g for g, (ok, _) in results.items() if not ok]


# --- the samples -------------------------------------------------------------------------------


def test_every_named_mistake_loses_correctness_points():
    # The correct and untouched samples and their number: tests/test_notebooks.py, for every problem.
    mistakes = [s for s in SAMPLE_SET if s.expected_cause and not s.untouched]
    assert mistakes and all(0 <= s.expected_points < 10 for s in mistakes)


@pytest.mark.parametrize("sample", SAMPLE_SET, ids=lambda s: s.name)
def test_each_sample_earns_its_expected_points_with_its_cause(source_nb, release_nb, sample):
    """Graded in-process, hidden cells included: the points of the passing cells are the sample's
    expected_points, and the first failing cell names its expected cause."""
    if sample.expected_note == "answer cell rejected":  # the judge grades nothing of it: 0
        answer = strip_markers(cell_by_id(source_nb, problem1.SPEC.student_cell).source) + sample.answer_suffix
        assert answer_cell_violations(answer, problem1.SPEC.answer_policy) and sample.expected_points == 0
        return
    namespace = submission_namespace(source_nb, release_nb, sample, sample.name)
    results = run_graded_cells(source_nb, namespace)
    points = points_of(source_nb)
    earned = sum(points[gid] for gid, (ok, _) in results.items() if ok)
    assert earned == sample.expected_points, {gid: ok for gid, (ok, _) in results.items()}
    if sample.expected_cause:
        printed = "".join(text for ok, text in results.values() if not ok)
        assert f"likely cause ({sample.expected_cause})" in printed, printed


@pytest.mark.parametrize("sample", [s for s in SAMPLE_SET if s.expected_cause], ids=lambda s: s.name)
def test_each_sample_mistake_is_named_by_run_case(source_nb, release_nb, sample):
    namespace = submission_namespace(source_nb, release_nb, sample, sample.name + "_rc")
    fn = namespace["naive_attention"]
    case = Case(1, 4, 40, 16, "float32", H_kv=2, window=6, sink=2, seed=9)
    call = problem1.causal(fn)
    if sample.expected_cause == "gqa_modulo":  # a GQA mistake shows without a mask as well
        case, call = Case(1, 4, 40, 16, "float32", H_kv=2, seed=9), fn
    result = run_case(call, case, runtime=problem1.torch_runtime(), require_triton=False,
                      diagnoses=problem1.DIAGNOSES)
    assert not result.passed
    assert sample.expected_cause in [f.code for f in result.findings], "\n".join(result.lines())


# --- each typical mistake is named ------------------------------------------------------------


SOLUTION_EDITS = {
    "mask_transposed": (("row = idx[:, None]", "row = idx[None, :]"), ("col = idx[None, :]", "col = idx[:, None]")),
    "sinks_ignored": (("(col <= row) & (in_window | is_sink)", "(col <= row) & in_window"),),
    "window_ignored": (("(col <= row) & (in_window | is_sink)", "(col <= row)"),),
    "masked_to_zero": (('s.masked_fill_(~mask, float("-inf"))', "s = s * mask"),),
    "mask_when_not_causal": (("    if is_causal:\n        seq_len", "    if True:\n        seq_len"),),
    "softmax_dim": (("p = torch.softmax(s, dim=-1)", "p = torch.softmax(s, dim=-2)"),),
    "wrong_scale": (("* (1.0 / math.sqrt(head_dim))", "* 1.0"),),
    "mask_arguments_swapped": (("create_mask_bool(seq_len, window, sink_size or 0,",
                                "create_mask_bool(seq_len, sink_size or 0, window,"),),
}


def edited_reference(source_nb, edits, name):
    return import_kernel_module(problem1.SPEC, source_nb, edits=edits, name=f"edit_{name}")


@pytest.mark.parametrize("code", sorted(SOLUTION_EDITS))
def test_each_attention_mistake_is_named(source_nb, code):
    module = edited_reference(source_nb, SOLUTION_EDITS[code], code)
    if code == "mask_when_not_causal":
        call, case = module.naive_attention, Case(1, 2, 48, 16, "float32", seed=4)
    else:
        call, case = problem1.causal(module.naive_attention), Case(1, 2, 48, 16, "float32", window=7, sink=2, seed=4)
    result = run_case(call, case, runtime=problem1.torch_runtime(), require_triton=False,
                      diagnoses=problem1.DIAGNOSES)
    assert [f.code for f in result.findings] == [code], "\n".join(result.lines())


def test_a_base2_lse_is_named(reference):
    def base2(q, k, v):
        o, lse = reference.naive_attention(q, k, v)
        return o, lse * references.LOG2_E

    result = run_case(base2, Case(1, 2, 32, 16, "float32"), runtime=problem1.torch_runtime(),
                      require_triton=False, diagnoses=problem1.DIAGNOSES)
    assert [f.code for f in result.findings] == ["lse_base2"]


def test_sdpa_is_refused_even_when_correct():
    def sdpa(q, k, v):
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return o, references.attention_reference(q, k, v)[1].float()

    result = run_case(sdpa, Case(1, 2, 32, 16, "float32"), runtime=problem1.torch_runtime(), require_triton=False)
    assert [f.code for f in result.findings] == ["uses_builtin_attention"]


def test_float32_cases_run_in_float32_on_the_cpu(reference):
    result = run_case(reference.naive_attention, Case(1, 1, 16, 16, "float32"), runtime=problem1.torch_runtime(),
                      require_triton=False)
    assert result.passed and result.case.dtype == "float32" and not result.note


MASK_MISTAKES = {
    "window_off_by_one": lambda n, w, s: references.create_mask_bool(n, w - 1, s),
    "sinks_ignored": lambda n, w, s: references.create_mask_bool(n, w, 0),
    "mask_transposed": lambda n, w, s: references.create_mask_bool(n, w, s).T.contiguous(),
    "sink_not_causal": lambda n, w, s: (references.create_mask_bool(n, w, 0)
                                        | (torch.arange(n)[None, :] < s).expand(n, n)),
    "bad_return": lambda n, w, s: references.create_mask_bool(n, w, s).int(),
}


@pytest.mark.parametrize("code", sorted(MASK_MISTAKES))
def test_each_mask_mistake_is_named(code):
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(CheckFailed):
        shapes = [(12, 4, 3), (12, 12, 0)] if code != "sinks_ignored" else [(12, 4, 3)]
        problem1.assert_masks(MASK_MISTAKES[code], shapes)
    assert f"likely cause ({code})" in out.getvalue(), out.getvalue()


@pytest.mark.parametrize("wrong, code", [
    (lambda b, h, n, dt: b * h * n * n, "bytes_per_element"),
    (lambda b, h, n, dt: b * h * n * n * dt.itemsize * 8, "bits_not_bytes"),
    (lambda b, h, n, dt: b * h * n * dt.itemsize, "linear_in_length"),
])
def test_each_byte_count_mistake_is_named(wrong, code):
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(CheckFailed):
        problem1.assert_score_bytes(wrong)
    assert f"likely cause ({code})" in out.getvalue()


def test_self_check_passes_the_reference_and_names_a_window_mistake(source_nb, reference):
    with redirect_stdout(io.StringIO()):
        problem1.check(reference.naive_attention, reference.create_mask_bool, reference.score_matrix_bytes)
    broken = edited_reference(source_nb, [("in_window = col >= row - (window_size - 1)",
                                           "in_window = col >= row - window_size")], "selfcheck")
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(CheckFailed):
        problem1.check(broken.naive_attention, broken.create_mask_bool, broken.score_matrix_bytes)
    assert "likely cause (window_off_by_one)" in out.getvalue()


# --- the memory tracker -------------------------------------------------------------------------


def test_tracker_counts_a_known_sequence_of_allocations_exactly():
    kept = {}

    def allocate():
        a = torch.empty(1000)                         # 4000 bytes
        b = torch.empty(500, dtype=torch.float64)     # 4000 more: 8000 live, the peak
        del a                                         # 4000 live
        kept["view"] = b.view(10, 50)                 # a view: no new memory, keeps b's alive
        c = torch.empty(100, dtype=torch.int8)        # 4100 live
        c.add_(1)                                     # in place: no new memory
        return c

    with PeakTensorMemory() as mem:
        out = allocate()
    assert (mem.peak_bytes, mem.live_bytes, mem.allocations) == (8000, 4100, 3)
    del out
    assert mem.live_bytes == 4000                     # b, held by the view
    kept.clear()
    assert mem.live_bytes == 0


def test_tracker_ignores_inputs_and_counts_outputs():
    x = torch.ones(256, 256)                          # 262144 bytes, allocated before the call
    peak, result = peak_call_bytes(lambda t: (t.T, t * 2), x)
    assert peak == 256 * 256 * 4                      # the transpose is a view; t * 2 is new
    assert result[0].data_ptr() == x.data_ptr()


def test_tracemalloc_cannot_see_tensor_memory():
    """Why the course needs its own tracker on the CPU (the notebook says so)."""
    tracemalloc.start()
    try:
        t = torch.empty(10 ** 7)                      # 40 MB
        assert tracemalloc.get_traced_memory()[1] < 10 ** 6
        del t
    finally:
        tracemalloc.stop()


def test_reference_holds_ten_bytes_per_score_at_its_peak(reference):
    """float32 scores, float32 probabilities and their float16 copy: 4 + 4 + 2 bytes per score,
    plus the (L, L) boolean mask shared by the heads."""
    rows = problem1.measure_memory(reference.naive_attention, (128, 256), batch=1, heads=4, dtype=torch.float16)
    per_score = problem1.bytes_per_score(rows, 1, 4)
    assert 10 <= per_score < 10.1
    rows = problem1.measure_memory(problem1.causal(reference.naive_attention), (128, 256), batch=1, heads=4)
    assert 10 <= problem1.bytes_per_score(rows, 1, 4) <= 10 + 2 / 4  # mask and ~mask: 2 bytes per (i, j)


def test_memory_study_measures_and_extrapolates_on_the_cpu(reference, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with redirect_stdout(io.StringIO()) as out:
        study = problem1.memory_study(reference.naive_attention, reference.score_matrix_bytes, plot=True)
    text = out.getvalue()
    assert abs(study["exponent"] - 2) < 0.05
    # 80 GiB / (16 heads * 10 bytes) = L^2: L = 23170; 16 GiB: L = 10362.
    assert abs(study["limits"]["H100 (80 GiB)"] - 23170) < 60
    assert abs(study["limits"]["T4 (16 GiB)"] - 10362) < 30
    assert "runs out at about L = 23," in text and "5.0 score matrices" in text
    # At the largest length the O(L) terms are small: the peak is five float16 score matrices.
    assert abs(study["rows"][-1]["peak_bytes"] / study["predicted"][-1] - 5) < 0.1


def test_memory_study_explains_an_unfinished_function():
    def unfinished(q, k, v):
        raise NotImplementedError()

    with redirect_stdout(io.StringIO()) as out:
        assert problem1.memory_study(unfinished, unfinished, plot=False) is None
    assert "not implemented yet" in out.getvalue()


def test_benchmark_says_why_it_does_nothing_here(reference, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with redirect_stdout(io.StringIO()) as out:
        assert problem1.benchmark(reference.naive_attention) is None
    assert "No GPU here" in out.getvalue()
    monkeypatch.setenv("COURSE_GRADING", "1")
    with redirect_stdout(io.StringIO()) as out:
        assert problem1.benchmark(reference.naive_attention) is None
    assert "skipped while grading" in out.getvalue()


# --- the student notebook (what every problem's notebooks share: tests/test_notebooks.py) --------


def test_the_mask_picture_is_drawn_by_the_graders_own_function(release_nb):
    assert "plot_mask" in "\n".join(c.source for c in release_nb.cells)


@pytest.mark.gpu
def test_cpu_tracker_agrees_with_the_cuda_counter(reference):
    """Run on CUDA tensors, the tracker's peak equals torch.cuda.max_memory_allocated byte for byte
    (seen on an H100: L = 1024 to 4096, B=1, H=16, with and without the causal mask)."""
    q, k, v = (torch.randn(1, 16, 2048, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    for fn in (reference.naive_attention, problem1.causal(reference.naive_attention)):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad(), PeakTensorMemory() as mem:
            fn(q, k, v)
        torch.cuda.synchronize()
        assert mem.peak_bytes == torch.cuda.max_memory_allocated() - base
