"""Problem 1: attention in PyTorch, and why it does not scale.

The student writes `create_mask_bool` (the seed's causal / sliding-window / sink rules),
`naive_attention` (output and natural-log log-sum-exp, GQA, masks) and `score_matrix_bytes`
(the size of one L x L score tensor), then measures how the memory of their own function grows
with L and where a GPU runs out.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import TypedDict

import torch

from .. import device as device_mod
from ..checks import TOLERANCES, CheckFailed, assert_cases, stderr_to_stdout, time_limit
from ..diagnose import Finding, _explains, describe_exception
from ..feedback_run import SELF_CHECK
from ..inputs import Case
from ..references import create_mask_bool as reference_mask
from ..verdict import CaseVerdict, report
from .online_softmax_faults import diagnose_online_softmax
from .spec import ProblemSpec

# The hint ladder (autograder.hints.hint("problem1")): two nudges, then the idea, never the code.
_HINTS = (
    "Start with the mask, on paper, for L = 6, W = 3, S = 1: write the 6 x 6 grid of which key j each "
    "query i may see, then express each rule as a comparison between a column of query indices and a "
    "row of key indices (broadcasting an (L, 1) against a (1, L) gives the whole grid at once).",
    "In naive_attention, work in float32 from the scores on: a float16 score already carries a relative "
    "error of 2^-11, and the softmax turns that into an error in every weight. The log-sum-exp comes from "
    "the masked float32 scores, before the softmax. For grouped-query attention, query head h must read "
    "K/V head h // (Hq // Hkv): consecutive query heads share one K/V head.",
    "mask: (j <= i) and ((j >= i - (W - 1)) or (j < S)). attention: give each query head its K/V head "
    "(repeat each K/V head Hq // Hkv times in a row) -> scores in float32 times 1/sqrt(D) -> only if "
    "is_causal, set the scores the mask hides to -inf (window None means W = L, sinks None means 0) -> "
    "lse = logsumexp over keys -> p = softmax over keys -> o = p in the input dtype @ v. The size of S is "
    "B * H * L * L elements times the bytes of one element.",
)

SPEC = ProblemSpec(
    assignment="problem1",
    notebook="problem1.ipynb",
    # No kernel here: the imports cell and the student's functions are the whole module.
    kernel_cells=("imports", "attention"),
    student_cell="attention",
    kernel_function="naive_attention",
    answer_policy="torch",
    hints=_HINTS,
    # What a self-learner can run at any time (the visible graded cells' shapes).
    self_check_cases=(
        Case(1, 2, 64, 32, "float32"),
        Case(2, 4, 100, 64, H_kv=2, seed=1),
        Case(1, 2, 77, 32, causal=True, seed=2),
        Case(1, 2, 50, 16, "float32", window=8, sink=2, seed=3),
    ),
)


# --- calling and checking the student's attention ----------------------------------------------

def causal(fn):
    """`fn` with is_causal=True; window_size / sink_size from a case pass through."""
    def call(q, k, v, **kwargs):
        return fn(q, k, v, is_causal=True, **kwargs)
    return call


def torch_runtime():
    """The current runtime, accepting every dtype: these checks run PyTorch code, not a Triton kernel,
    so float32 and bfloat16 are as trustworthy on the CPU as float16 (run_case would otherwise turn
    every case into the interpreter's float16)."""
    return replace(device_mod.current(), dtypes=(torch.float16, torch.float32, torch.bfloat16))


def assert_attention(fn, cases, **kwargs):
    """Check naive_attention on `cases` (output and log-sum-exp), one line each.

    Cases without a mask call fn(q, k, v); causal, window and sink cases call it with
    is_causal=True (and window_size / sink_size when set). Raises CheckFailed if any case failed.
    """
    groups = [("is_causal=False:", fn, [c for c in cases if not c.is_causal]),
              ("is_causal=True:", causal(fn), [c for c in cases if c.is_causal])]
    first_failure = None
    for title, call, group in groups:
        if not group:
            continue
        try:
            assert_cases(call, group, title=title, require_triton=False, diagnoses=DIAGNOSES,
                         runtime=torch_runtime(), **kwargs)
        except CheckFailed as exc:
            first_failure = first_failure or exc
    if first_failure:
        raise first_failure


SELF_CHECK_MASKS = [(6, 6, 0), (6, 3, 0), (6, 3, 1), (8, 3, 2), (5, 1, 0)]


@SELF_CHECK
def check(fn, create_mask=None, score_bytes=None):
    """Self-check with the visible inputs: naive_attention `fn`, and when given, create_mask_bool and
    score_matrix_bytes. Raises CheckFailed with the grader's likely cause for the first that fails."""
    first_failure = None
    for run in (lambda: assert_attention(fn, SPEC.self_check_cases),
                lambda: create_mask and assert_masks(create_mask, SELF_CHECK_MASKS),
                lambda: score_bytes and assert_score_bytes(score_bytes)):
        try:
            run()
        except CheckFailed as exc:
            first_failure = first_failure or exc
    if first_failure:
        raise first_failure


# --- diagnoses: re-enact each typical mistake in float64 and compare -----------------------------

def _attention64(q, k, v, mask=None, head_of=None, fill=float("-inf"), softmax_dim=-1):
    """Attention in float64 with an arbitrary (Lq, Lk) mask and query-head -> K/V-head map."""
    q, k, v = (t.detach().double().cpu() for t in (q, k, v))
    hq, hkv = q.shape[1], k.shape[1]
    head_of = head_of or [h // (hq // hkv) for h in range(hq)]
    k, v = k[:, head_of], v[:, head_of]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, fill)
    return torch.softmax(s, dim=softmax_dim) @ v


def _case_mask(case, window=None, sink=None):
    """The seed's mask for `case`, with its window or sink replaced when given."""
    w = (case.L if case.window is None else case.window) if window is None else window
    s = (case.sink or 0) if sink is None else sink
    return reference_mask(case.L, window_size=w, sink_size=s)


def _mask_variants(case):
    """(code, message, mask) for each wrong mask a student typically builds for this case."""
    n = case.L
    idx = torch.arange(n)
    row, col = idx[:, None], idx[None, :]
    right = _case_mask(case)
    w, s = (n if case.window is None else case.window), (case.sink or 0)
    out = []
    if w < n:
        for wrong in (w + 1, w - 1):
            if wrong >= 1:
                out.append(("window_off_by_one",
                            f"the window holds {wrong} keys instead of W = {w}: query i sees keys "
                            f"i - (W - 1) through i, W keys counting itself, so the test is j >= i - (W - 1)",
                            _case_mask(case, window=wrong)))
        out.append(("window_ignored", "the sliding window is ignored (every earlier key is visible): also "
                                      "require j >= i - (W - 1)", _case_mask(case, window=n)))
    if s > 0:
        out.append(("sinks_ignored", f"the sink keys are ignored: key j < S = {s} must stay visible to every "
                                     "query at or after it, so OR (j < S) into the window test",
                    _case_mask(case, sink=0)))
        sink_leak = ((col <= row) & (col >= row - (w - 1))) | (col < s)
        if not torch.equal(sink_leak, right):
            out.append(("sink_not_causal", "sink keys are visible to earlier queries: a sink is still a "
                                           "later key for i < j, so the sink test is (j < S) and (j <= i); "
                                           "mind that & binds tighter than | in Python",
                        sink_leak))
    swapped = (col <= row) & ((col >= row - (s - 1)) | (col < w))   # W and S passed the other way round
    if not torch.equal(swapped, right):
        out.append(("mask_arguments_swapped", f"the window and the sink count are swapped: the mask holds a window "
                                              f"of S = {s} keys and {w} sinks; create_mask_bool takes (seq_len, "
                                              "window_size, sink_size) in that order", swapped))
    out.append(("mask_transposed", "the mask is transposed: query i (a row) may see key j (a column) only "
                                   "when j <= i; compare a column of key indices against a row of query indices "
                                   "the other way round", right.T.contiguous()))
    out.append(("mask_ignored", "is_causal=True but no mask was applied: set the scores of hidden keys to "
                                "-inf before the softmax", None))
    return out


def _tolerance(q):
    tol = TOLERANCES.get(q.dtype, TOLERANCES[torch.float16])
    return tol.atol, tol.rtol


def diagnose_masks(o64, q, k, v, ref_o, case):
    """Masked cases: a window off by one, sinks ignored or leaking, a transposed or missing mask,
    masked scores set to 0 instead of -inf."""
    if not case.is_causal:
        return []
    atol, rtol = _tolerance(q)
    o, ref = o64.detach().double().cpu(), ref_o.detach().double().cpu()
    for code, message, mask in _mask_variants(case):
        if _explains(o, _attention64(q, k, v, mask), ref, atol, rtol):
            return [Finding(code, message + " (the output matches that mistake exactly)")]
    if _explains(o, _attention64(q, k, v, _case_mask(case), fill=0.0), ref, atol, rtol):
        return [Finding("masked_to_zero", "hidden keys score 0 instead of -inf (e.g. scores * mask): exp(0) = 1 "
                                          "still gives them weight; use masked_fill with float('-inf')")]
    return []


def diagnose_unwanted_mask(o64, q, k, v, ref_o, case):
    """Unmasked cases that were masked anyway."""
    if case.is_causal or case.L != case.len_k:
        return []
    atol, rtol = _tolerance(q)
    o, ref = o64.detach().double().cpu(), ref_o.detach().double().cpu()
    if _explains(o, _attention64(q, k, v, reference_mask(case.L, case.L, 0)), ref, atol, rtol):
        return [Finding("mask_when_not_causal", "a causal mask was applied although is_causal=False: build and "
                                                "apply the mask only when is_causal is true")]
    return []


def diagnose_gqa(o64, q, k, v, ref_o, case):
    """Grouped-query attention with query head h reading K/V head h % Hkv (k.repeat tiles the heads)."""
    hq, hkv = q.shape[1], k.shape[1]
    if hkv == hq or hkv == 1:
        return []  # one K/V head per query head, or a single one: every mapping is the same
    atol, rtol = _tolerance(q)
    o, ref = o64.detach().double().cpu(), ref_o.detach().double().cpu()
    mask = _case_mask(case) if case.is_causal else None
    if _explains(o, _attention64(q, k, v, mask, head_of=[h % hkv for h in range(hq)]), ref, atol, rtol):
        return [Finding("gqa_modulo", f"query head h reads K/V head h % Hkv instead of h // (Hq // Hkv) = "
                                      f"h // {hq // hkv}: consecutive query heads share a K/V head, so repeat "
                                      "each K/V head in place (repeat_interleave), not the whole stack (repeat)")]
    return []


def diagnose_softmax_dim(o64, q, k, v, ref_o, case):
    """The softmax taken over queries (dim=-2) instead of keys."""
    if case.L != case.len_k:
        return []
    atol, rtol = _tolerance(q)
    o, ref = o64.detach().double().cpu(), ref_o.detach().double().cpu()
    mask = _case_mask(case) if case.is_causal else None
    if _explains(o, _attention64(q, k, v, mask, softmax_dim=-2), ref, atol, rtol):
        return [Finding("softmax_dim", "the softmax normalises over queries: each query's weights must sum to 1 "
                                       "over the keys, the last dimension (dim=-1)")]
    return []


# Tried in order before the generic diagnoses (wrong scale, swapped heads, NaNs, row factors); an
# unnormalised softmax is the online softmax's missing division, which its re-enactment names.
DIAGNOSES = (diagnose_gqa, diagnose_masks, diagnose_unwanted_mask, diagnose_softmax_dim, diagnose_online_softmax)


# --- create_mask_bool -----------------------------------------------------------------------------

def _mask_finding(got, n, w, s) -> Finding:
    """Why a mask differs from the seed's for (L, W, S)."""
    idx = torch.arange(n)
    row, col = idx[:, None], idx[None, :]
    case = Case(1, 1, n, 16, window=w, sink=s)
    for code, message, mask in _mask_variants(case):
        if mask is not None and torch.equal(got, mask):
            return Finding(code, message)
    if torch.equal(got, (col >= row - (w - 1)) | ((col < s) & (col <= row))):
        return Finding("mask_not_causal", "keys after the query are visible: the window also needs j <= i")
    bad = (got != reference_mask(n, w, s)).nonzero()
    i, j = (int(x) for x in bad[0])
    want = bool(reference_mask(n, w, s)[i, j])
    return Finding("wrong_mask", f"query {i} {'should' if want else 'should not'} see key {j}: visible means "
                                 f"j <= i and (j >= i - (W - 1) or j < S)")


def _mask_problem(fn, n, w, s):
    """None if fn builds the seed's mask for (L, W, S), else a Finding."""
    try:
        with time_limit(60):
            got = fn(n, w, s)
    except Exception as exc:  # student code may raise anything; the verdict must not crash
        return describe_exception(exc)
    if not isinstance(got, torch.Tensor):
        return Finding("bad_return", f"returned {type(got).__name__}; create_mask_bool must return a tensor")
    if got.shape != (n, n):
        return Finding("bad_return", f"the mask has shape {tuple(got.shape)}, expected ({n}, {n})")
    if got.dtype != torch.bool:
        return Finding("bad_return", f"the mask has dtype {got.dtype}; return a torch.bool tensor (~mask and "
                                     "masked_fill need booleans)")
    got = got.cpu()
    if torch.equal(got, reference_mask(n, w, s)):
        return None
    return _mask_finding(got, n, w, s)


def assert_masks(fn, combos, title="create_mask_bool(seq_len, window_size, sink_size):"):
    """Compare fn(L, W, S) with the seed's create_mask_bool for each (L, W, S); one line per L.

    Raises CheckFailed (zero points in nbgrader) if any mask differs.
    """
    by_length: dict[int, list] = {}
    for n, w, s in combos:
        by_length.setdefault(n, []).append((w, s))
    failed, first, verdicts = 0, None, []
    with stderr_to_stdout():
        print(title)
        for n, pairs in by_length.items():
            bad = [(w, s, f) for w, s in pairs for f in [_mask_problem(fn, n, w, s)] if f]
            label = f"L={n}: " + (f"W={pairs[0][0]} S={pairs[0][1]}" if len(pairs) == 1
                                  else f"{len(pairs)} (W, S) pairs")
            if not bad:
                verdicts.append(report(CaseVerdict(label, True, "same as the seed's mask")))
                continue
            w, s, finding = bad[0]
            failed += 1
            first = first or (f"L={n} W={w} S={s}", finding)
            verdicts.append(report(CaseVerdict(label, False, f"{len(bad)} wrong, first at W={w} S={s}", [finding])))
    if failed:
        assert first is not None  # set with the first failure
        raise CheckFailed(f"{failed} of {len(by_length)} lengths failed; first: {first[0]}: {first[1].message}",
                          verdicts)
    print(f"All {len(combos)} mask cases passed.")


# --- score_matrix_bytes ---------------------------------------------------------------------------

SCORE_BYTES_CASES = ((1, 1, 1, torch.float32), (2, 16, 4096, torch.float16),
                     (1, 32, 131072, torch.bfloat16), (4, 8, 1000, torch.float32))


def _score_bytes_finding(got, b, h, n, dtype) -> Finding:
    size = dtype.itemsize
    want = b * h * n * n * size
    guesses = {
        "bytes_per_element": (want // size, "it counts elements, not bytes: multiply by the bytes of one element "
                                            "(dtype.itemsize: 2 for float16, 4 for float32)"),
        "bits_not_bytes": (want * 8, "it counts bits: an element of dtype takes dtype.itemsize bytes"),
        "linear_in_length": (b * h * n * size, "S has L x L entries per head: the size grows with L squared"),
        "missing_batch_or_heads": (n * n * size, "there is one L x L matrix per batch element and per head"),
    }
    for code, (value, message) in guesses.items():
        if got == value and value != want:
            return Finding(code, message)
    return Finding("wrong_size", f"expected {want} bytes = B * H * L * L * {size}")


def assert_score_bytes(fn, cases=SCORE_BYTES_CASES):
    """Compare fn(B, H, L, dtype) with the bytes of one (B, H, L, L) tensor of dtype."""
    failed, first, verdicts = 0, None, []
    with stderr_to_stdout():
        print("score_matrix_bytes(batch, heads, seq_len, dtype):")
        for b, h, n, dtype in cases:
            want = b * h * n * n * dtype.itemsize
            label = f"B={b} H={h} L={n} {str(dtype).replace('torch.', '')}"
            try:
                got = fn(b, h, n, dtype)
                finding = None
                if isinstance(got, torch.Tensor):
                    got = got.item()
                if not isinstance(got, (int, float)) or got != want:
                    finding = _score_bytes_finding(got, b, h, n, dtype)
            except Exception as exc:  # student code may raise anything
                got, finding = None, describe_exception(exc)
            if finding is None:
                verdicts.append(report(CaseVerdict(label, True, f"{want} bytes ({want / 2 ** 30:.3g} GiB)")))
                continue
            failed += 1
            first = first or (label, finding)
            verdicts.append(report(CaseVerdict(label, False, f"got {got}, expected {want}", [finding])))
    if failed:
        assert first is not None  # set with the first failure
        raise CheckFailed(f"{failed} of {len(cases)} cases failed; first: {first[0]}: {first[1].message}",
                          verdicts)
    print(f"All {len(cases)} cases passed.")


# --- measuring memory -------------------------------------------------------------------------------

class _Target(TypedDict):
    batch: int
    heads: int
    dtype: torch.dtype


GIB = 2 ** 30
# Where the extrapolation asks "does it fit": one sequence of a 16-head layer in float16.
TARGET: _Target = {"batch": 1, "heads": 16, "dtype": torch.float16}
DEVICES = {"H100 (80 GiB)": 80 * GIB, "T4 (16 GiB)": 16 * GIB}


def _grading() -> bool:
    import os

    return os.environ.get("COURSE_GRADING") == "1"


def measure_memory(fn, lengths, batch, heads, head_dim=64, dtype=torch.float16, device="cpu", try_beyond=False):
    """Peak extra memory of fn(q, k, v) for each L: a list of {"L", "peak_bytes"} or {"L", "error"}.

    Inputs are allocated before the measurement, so only what the call itself needs is counted
    (its intermediates and its outputs). With `try_beyond`, an out-of-memory error is a result.
    """
    from ..memory import peak_call_bytes

    rows = []
    for n in lengths:
        gen = torch.Generator().manual_seed(n)
        q, k, v = (torch.randn(batch, heads, n, head_dim, generator=gen).to(device=device, dtype=dtype)
                   for _ in range(3))
        try:
            peak, _ = peak_call_bytes(fn, q, k, v)
            rows.append({"L": n, "peak_bytes": peak})
        except torch.OutOfMemoryError:
            if not try_beyond:
                raise
            rows.append({"L": n, "error": "out of memory"})
        finally:
            del q, k, v
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows


def bytes_per_score(rows, batch, heads) -> float:
    """Peak bytes per score entry (per query, key, batch element and head): the coefficient a of
    peak = a L^2 + b L through the two largest measured lengths, so that what grows only with L
    (the outputs, float32 copies of Q and K) does not count as score memory."""
    ok = [r for r in rows if "peak_bytes" in r]
    (l1, p1), (l2, p2) = [(r["L"], r["peak_bytes"]) for r in ok[-2:]]
    return (p2 / l2 - p1 / l1) / (l2 - l1) / (batch * heads)


def growth_exponent(rows) -> float:
    """The slope of log(peak) against log(L) between the two largest measured lengths."""
    ok = [r for r in rows if "peak_bytes" in r]
    (l1, p1), (l2, p2) = [(r["L"], r["peak_bytes"]) for r in ok[-2:]]
    return math.log(p2 / p1) / math.log(l2 / l1)


def longest_fitting(per_score: float, capacity_bytes: float, batch: int, heads: int) -> int:
    """The longest L whose batch * heads * L^2 * per_score bytes fit in capacity_bytes."""
    return int(math.isqrt(int(capacity_bytes / (batch * heads * per_score))))


def memory_study(fn, score_bytes, lengths=None, batch=None, heads=None, head_dim=64, dtype=torch.float16,
                 plot=True):
    """Measure fn's peak memory against L, compare with score_bytes(B, H, L, dtype), plot both on
    log-log axes, and extrapolate where an 80 GiB H100 and a 16 GiB T4 run out (B=1, H=16, float16).

    On a GPU: torch.cuda.max_memory_allocated, B=1, H=16, L up to 16384, then one length past the
    predicted limit to see the out-of-memory error for real (not while grading). On the CPU: the
    tensor-bytes tracker of autograder.memory, B=1, H=4, L up to 1024 (a second or so).
    Returns a dict with the rows and the numbers it printed.
    """
    on_gpu = torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    big = on_gpu and not _grading()
    batch = batch or 1
    heads = heads or (16 if big else 4)
    lengths = lengths or ((1024, 2048, 4096, 8192, 16384) if big else (128, 256, 512, 1024))
    how = ("torch.cuda.max_memory_allocated" if on_gpu
           else "the live bytes of the tensors it allocates (autograder.memory.PeakTensorMemory)")
    print(f"Peak extra memory of one call, B={batch} H={heads} D={head_dim} {str(dtype)[6:]} on {device}, "
          f"measured with {how}:")
    try:
        rows = measure_memory(fn, lengths, batch, heads, head_dim, dtype, device)
    except Exception as exc:  # an unfinished or broken function: say so instead of a traceback
        print(f"  could not measure: {describe_exception(exc).message}")
        return None
    try:
        predicted = [score_bytes(batch, heads, r["L"], dtype) for r in rows]
        predicted = [float(p) for p in predicted]
    except Exception as exc:  # score_matrix_bytes not written yet: measure anyway
        print(f"  (no prediction: score_matrix_bytes {describe_exception(exc).message})")
        predicted = None
    print(f"  {'L':>6} {'measured':>12} {'one S':>12} {'ratio':>7}")
    for i, r in enumerate(rows):
        one = f"{predicted[i] / 2 ** 20:>9.2f} MiB" if predicted else f"{'-':>12}"
        ratio = f"{r['peak_bytes'] / predicted[i]:>7.2f}" if predicted and predicted[i] else f"{'-':>7}"
        print(f"  {r['L']:>6} {r['peak_bytes'] / 2 ** 20:>8.2f} MiB {one} {ratio}")

    per_score = bytes_per_score(rows, batch, heads)
    exponent = growth_exponent(rows)
    size = dtype.itemsize
    print(f"Memory grows as L^{exponent:.2f}; at its peak your function holds {per_score:.1f} bytes per score, "
          f"i.e. {per_score / size:.1f} score matrices of {size}-byte {str(dtype)[6:]}.")
    tb, th = TARGET["batch"], TARGET["heads"]
    limits = {name: longest_fitting(per_score * TARGET["dtype"].itemsize / size, cap, tb, th)
              for name, cap in DEVICES.items()}
    for name, n in limits.items():
        print(f"  {name}: runs out at about L = {n:,} for B={tb}, H={th} float16 "
              f"(S alone would fit up to L = {longest_fitting(TARGET['dtype'].itemsize, DEVICES[name], tb, th):,})")
    result = {"rows": rows, "predicted": predicted, "bytes_per_score": per_score, "exponent": exponent,
              "limits": limits, "device": device, "batch": batch, "heads": heads}
    if big:
        result["beyond"] = _run_out_for_real(fn, per_score, batch, heads, head_dim, dtype)
    if plot:
        plot_memory(result, dtype)
    return result


def _run_out_for_real(fn, per_score, batch, heads, head_dim, dtype):
    """On a GPU: the first doubling of L past what fits, to see the error PyTorch really gives."""
    free = torch.cuda.mem_get_info()[0]
    n = 1024
    while batch * heads * n * n * per_score <= free:
        n *= 2
    row = measure_memory(fn, [n], batch, heads, head_dim, dtype, "cuda", try_beyond=True)[0]
    need = batch * heads * n * n * per_score / GIB
    print(f"  L = {n:,} would need about {need:.0f} GiB with {free / GIB:.0f} GiB free: "
          + (row.get("error", "it fitted after all") + "."))
    return row


def plot_memory(result, dtype=torch.float16, max_length=2 ** 17):
    """Left: measured peak and one score matrix against L (log-log). Right: the measured bytes per
    score extrapolated to B=1, H=16 float16, with the memory of an H100 and a T4."""
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "peak_bytes" in r]
    ls = [r["L"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.loglog(ls, [r["peak_bytes"] for r in rows], "o-", base=2, label="measured peak of your function")
    if result["predicted"]:
        left.loglog(ls, result["predicted"], "s--", base=2, label="one score matrix S (your formula)")
    left.set_xlabel("sequence length L")
    left.set_ylabel("bytes")
    left.set_title(f"B={result['batch']} H={result['heads']} {str(dtype)[6:]} on {result['device']}: "
                   f"slope {result['exponent']:.2f} on log-log axes", fontsize=10)
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=8)

    tb, th = TARGET["batch"], TARGET["heads"]
    per_score = result["bytes_per_score"] * TARGET["dtype"].itemsize / dtype.itemsize
    xs = [2 ** e for e in range(10, int(math.log2(max_length)) + 1)]
    right.loglog(xs, [tb * th * n * n * per_score for n in xs], "-", base=2,
                 label=f"naive: {per_score:.0f} bytes per score")
    right.loglog(xs, [tb * th * n * n * TARGET["dtype"].itemsize for n in xs], ":", base=2,
                 label="S alone (float16)")
    for (name, cap), color in zip(DEVICES.items(), ("C3", "C2"), strict=True):
        right.axhline(cap, color=color, lw=1)
        n = result["limits"][name]
        right.plot([n], [cap], "o", color=color)
        right.annotate(f"{name}: L = {n:,}", (n, cap), textcoords="offset points", xytext=(-150, 6),
                       fontsize=8, color=color)
    right.set_xlabel("sequence length L")
    right.set_ylabel("bytes")
    right.set_title(f"Extrapolated to B={tb}, H={th}, float16", fontsize=10)
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


# --- benchmark --------------------------------------------------------------------------------------

def benchmark(fn, lengths=(1024, 2048, 4096, 8192), head_dim=64, batch=1, heads=16, plot_path=None):
    """Time the student's naive attention against the seed's and SDPA's (flash and cuDNN backends).

    Prints why it does nothing while grading or without a GPU.
    """
    import os

    from .. import benchmark as bench

    if os.environ.get("COURSE_GRADING") == "1":
        print(bench.GRADING_SKIP)
        return None
    if not torch.cuda.is_available():
        print("No GPU here: a CPU timing of a matrix multiply says nothing about how attention behaves on a "
              "GPU, where the L x L matrices' trips to memory are what costs. Run this cell on a GPU to see "
              "your function next to PyTorch's fused attention.")
        return None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    impls = {"your naive_attention": lambda q, k, v: fn(q, k, v)[0], **bench.peers()}
    rows = bench.run_benchmark(impls, [(batch, heads, n, head_dim) for n in lengths], dtype=dtype)
    print(bench.format_table(rows))
    print(bench.speedup_table(rows, "SDPA FLASH_ATTENTION"))
    bench.plot(rows, plot_path, title=f"B={batch} H={heads} D={head_dim} {str(dtype)[6:]} on "
                                      f"{torch.cuda.get_device_name(0)}")
    return rows
