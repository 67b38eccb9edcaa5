"""Problem 8: the backward of causal attention with grouped-query heads, a sliding window and sinks.

The graded cells call `assert_backward_cases`: dQ, dK and dV of the student's kernels (through
autograd, as training computes them) against float64 autograd of the reference attention, whose
dK/dV sum a GQA group (`checks.run_grad_case`), and `check_visits`: the tiles each dK/dV program
visited (reported by the kernel, `_visits=`) against the tiles that hold a visible pair.

A wrong answer is named by re-enacting the kernels in float64 (`reenact_backward`): the tiles each
program visits and where it masks them become weight matrices (how many times the pair (i, j) is
folded in), with one switch per typical mistake (a group's dK/dV not summed, the window or the sinks
missing from the recompute's mask, the sink loop starting inside the window loop or missing, Delta
missing, the softmax scale missing). `benchmark(fn)` times forward + backward against FlexAttention
with the same block mask, on a GPU.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from .. import performance
from ..checks import (
    DEFAULT_TIMEOUT_S,
    GRAD_TOLERANCES,
    assert_grad_cases,
    check_visit_cases,
    grad_call_kwargs,
    time_limit,
    visit_summary,
    visits_reported,
)
from ..diagnose import Finding, explains
from ..feedback_run import FIGURE, SELF_CHECK
from ..inputs import Case, make_grad, make_qkv
from ..performance import TimingPlan
from ..recorded import NotRecorded
from ..references import attention_mask, attention_reference, repeat_kv
from . import problem6, reference_function
from .delta_faults import wrong_delta
from .spec import ProblemSpec

# The hint ladder (autograder.hints.hint("problem8")): two nudges, then the idea, never the code.
_HINTS = (
    "Start with the mask in recompute_p: it is the forward's rule, applied again, because exp(s - lse) is "
    "positive for every key, hidden or not. Write it for one query i and one key j first: j <= i, and "
    "either j inside i's window (i - (W - 1) <= j) or j a sink (j < S). softmax_delta, score_grad, "
    "dkdv_update and dq_update are problem 7's, with window_size and sink_size handed on to recompute_p.",
    "For query_block_ranges read the mask by columns: which queries i see key j? Those from j itself to "
    "j + W - 1, and, if j < S, every later one. For the keys k_start .. k_end - 1 (k_end = min(k_start + "
    "BLOCK_N, seq_len)) the window loop starts at the query block holding k_start and ends after query "
    "k_end - 1 + W - 1 (never past seq_len). For group_heads: query head h reads K/V head h // group_size; "
    "which h give kv_head?",
    "recompute_p: problem 7's exp2 of the base-2 score minus the base-2 LSE, then, when MASKED, zero "
    "wherever the key is after the query or neither in the window nor a sink. query_block_ranges: the window "
    "loop from the block holding the first key to the window's end of the last key; the sink loop, only for "
    "a block that starts below S, from the first block the window loop did not visit (round up) to the end; "
    "otherwise empty (seq_len). group_heads: the group_size consecutive heads starting at kv_head times "
    "group_size.",
)


def _timing_inputs(case: Case, device):
    """The timed call's arguments: (q, k, v, do), the window and the sinks."""
    q, k, v = make_qkv(case, device=device)
    return (q, k, v, make_grad(case, device=device)), grad_call_kwargs(case)


SPEC = ProblemSpec(
    assignment="problem8",
    notebook="problem8.ipynb",
    kernel_cells=("imports", "backward", "kernel"),
    student_cell="backward",
    kernel_function="flash_attention_grads",
    answer_policy="triton",
    hints=_HINTS,
    # What a self-learner can run at any time (the visible graded cells' first cases).
    self_check_cases=(Case(1, 2, 80, 16, window=24, sink=4, seed=1),
                      Case(1, 4, 70, 32, H_kv=2, window=16, sink=20, seed=3)),
    direction="backward",
    performance_points=2,
    timing=TimingPlan(gpu_case=Case(2, 16, 8192, 64, H_kv=4, window=1024, sink=4),
                      cpu_case=Case(1, 2, 96, 16, H_kv=1, window=24, sink=4),
                      make_inputs=_timing_inputs,
                      output_atol={dtype: 2 * tol.atol for dtype, tol in GRAD_TOLERANCES.items()}),
)

SELF_CHECK_VISITS = (Case(1, 1, 128, 16, window=16, sink=4), Case(1, 2, 96, 16, H_kv=1, window=40, sink=40))


def _cdiv(a, b):
    return -(-a // b)


def _window_sink(case: Case) -> tuple[int, int]:
    return (case.L if case.window is None else case.window), (case.sink or 0)


def tile_sizes(fn, q):
    """(BLOCK_M1, BLOCK_N1, BLOCK_M2, BLOCK_N2) of the kernels behind `fn` for input `q`, or None."""
    config = getattr(fn, "launch_config", None)
    if config is None:
        return None
    _, _, block_m1, block_n1, block_m2, block_n2, *_ = config(q)
    return int(block_m1), int(block_n1), int(block_m2), int(block_n2)


# Tiles tried when a function does not say which it uses (the course's interpreter and GPU tiles).
_FALLBACK_TILES = ((16, 32, 32, 16), (64, 64, 64, 64), (32, 64, 64, 32))


# ---------------------------------------------------------------------------------------------
# The kernels' tile walks in plain Python.

def kv_ranges(k_start, seq_len, window, sink, block_m, block_n, variant="right"):
    """(window_lo, window_hi, sink_lo) as `query_block_ranges` returns them, or as a mistake does.

    right:          the window loop from the block of the first key to the last key's window end;
                    the sink loop, for a block holding a sink, from the first block after it to the end
    sink_twice:     the sink loop starts where the window loop starts (its blocks are visited twice)
    no_sink_loop:   the sink loop is always empty
    window_to_end:  the window loop runs to the end of the sequence
    sink_for_all:   every key block runs a sink loop, sinks or not
    """
    k_end = min(k_start + block_n, seq_len)
    window_lo = (k_start // block_m) * block_m
    window_hi = min(k_end - 1 + window, seq_len)
    if variant == "window_to_end":
        window_hi = seq_len
    after = _cdiv(window_hi, block_m) * block_m
    has_sink = k_start < sink or variant == "sink_for_all"
    sink_lo = (window_lo if variant == "sink_twice" else after) if has_sink else seq_len
    if variant == "no_sink_loop":
        sink_lo = seq_len
    return window_lo, window_hi, sink_lo


def kv_segments(k_start, seq_len, window, sink, block_m, block_n, ranges):
    """A dK/dV program's five loops for one key block: [(lo, hi, masked)], as the locked
    `_kv_segments` cuts the ranges (whole tiles unmasked, the rest through the recompute's mask)."""
    window_lo, window_hi, sink_lo = ranges
    all_sinks = k_start + block_n <= sink
    after = _cdiv(k_start + block_n - 1, block_m) * block_m
    inside = seq_len if all_sinks else (k_start + window) // block_m * block_m
    full_lo = min(max(after, window_lo), max(window_hi, window_lo))
    full_hi = min(max(inside, full_lo), max(window_hi, full_lo))
    sink_full = min(max(sink_lo, after), seq_len) if all_sinks else seq_len
    return [(window_lo, full_lo, True), (full_lo, full_hi, False), (full_hi, window_hi, True),
            (sink_lo, sink_full, True), (sink_full, seq_len, False)]


def q_segments(q_start, seq_len, window, sink, block_m, block_n):
    """A dQ program's five loops for one query block (the forward's walk, given in the notebook)."""
    q_end = min(q_start + block_m, seq_len)
    window_lo = max(q_start + 1 - window, 0) // block_n * block_n
    ranges = (min(window_lo, min(sink, q_end)), window_lo, q_end)
    return problem6.kernel_segments(q_start, seq_len, window, sink, block_m, block_n, ranges)


# Masks a recompute may apply instead of the right one: (i, j, W, S) -> bool.
MASKS = {
    "right": lambda i, j, w, s: (j <= i) & ((j > i - w) | (j < s)),
    "no_window": lambda i, j, w, s: j <= i,
    "no_sinks": lambda i, j, w, s: (j <= i) & (j > i - w),
}


def _add_visits(weights, rows, cols, lo, hi, step, masked, rule, window, sink, by_rows):
    """Add one loop's tiles: the blocks lo, lo + step, ... below hi of the walked axis (rows for the
    dK/dV program, keys for the dQ program), clipped to the sequence (what lies outside contributes 0)."""
    if hi <= lo:
        return
    end = min(lo + _cdiv(hi - lo, step) * step, weights.shape[0])
    lo = max(lo, 0)
    if end <= lo:
        return
    walked = torch.arange(lo, end)
    i, j = (walked[:, None], cols[None, :]) if by_rows else (rows[:, None], walked[None, :])
    seen = rule(i, j, window, sink) if masked else torch.ones(i.shape[0], j.shape[1], dtype=torch.bool)
    if by_rows:
        weights[lo:end, cols[0]:cols[-1] + 1] += seen.double()
    else:
        weights[rows[0]:rows[-1] + 1, lo:end] += seen.double()


def kv_weights(seq_len, window, sink, block_m, block_n, variant="right", mask="right"):
    """(L, L) float64: how many times the dK/dV programs fold the pair (query i, key j) into dK_j, dV_j."""
    weights = torch.zeros(seq_len, seq_len, dtype=torch.float64)
    for k_start in range(0, seq_len, block_n):
        keys = torch.arange(k_start, min(k_start + block_n, seq_len))
        ranges = kv_ranges(k_start, seq_len, window, sink, block_m, block_n, variant)
        for lo, hi, masked in kv_segments(k_start, seq_len, window, sink, block_m, block_n, ranges):
            _add_visits(weights, None, keys, lo, hi, block_m, masked, MASKS[mask], window, sink, by_rows=True)
    return weights


def q_weights(seq_len, window, sink, block_m, block_n, mask="right"):
    """(L, L) float64: how many times the dQ programs fold the pair (query i, key j) into dQ_i."""
    weights = torch.zeros(seq_len, seq_len, dtype=torch.float64)
    for q_start in range(0, seq_len, block_m):
        rows = torch.arange(q_start, min(q_start + block_m, seq_len))
        for lo, hi, masked in q_segments(q_start, seq_len, window, sink, block_m, block_n):
            _add_visits(weights, rows, None, lo, hi, block_n, masked, MASKS[mask], window, sink, by_rows=False)
    return weights


# ---------------------------------------------------------------------------------------------
# The backward in float64, with the typical mistakes as switches.

def exact_parts(q, k, v, do, window, sink) -> dict:
    """What every re-enactment shares, in float64: the inputs (K/V repeated per query head), the
    scores S, the reference LSE, dP = dO V^T and Delta = rowsum(O * dO)."""
    q, k, v, do = (t.detach().double().cpu() for t in (q, k, v, do))
    group = q.shape[1] // k.shape[1]
    o, lse = attention_reference(q, k, v, is_causal=True, window_size=window, sink_size=sink)
    k_rep, v_rep = repeat_kv(k, group), repeat_kv(v, group)
    return {"q": q, "k": k_rep, "do": do, "lse": lse, "group": group,
            "s": (q @ k_rep.transpose(-1, -2)) / math.sqrt(q.shape[-1]),
            "dp": do @ v_rep.transpose(-1, -2), "row_delta": (o * do).sum(-1, keepdim=True)}


def reenact_backward(q, k, v, do, window, sink, tiles=(16, 32, 32, 16), heads="all", mask="right",
                     kv_variant="right", delta="right", lse_natural=False, dq_factor=1.0, dk_factor=1.0,
                     parts=None):
    """(dq, dk, dv) in float64 of the backward kernels with the given mistakes.

    tiles:       (BLOCK_M1, BLOCK_N1, BLOCK_M2, BLOCK_N2) of the dK/dV and dQ programs
    heads:       "all" (the group sum) or "first" (dK/dV of a K/V head from its group's first query head only)
    mask:        the recompute's mask in masked tiles: "right", "no_window", "no_sinks" (MASKS)
    kv_variant:  the dK/dV program's query ranges (kv_ranges)
    delta:       "right" or "zero" (dS = P * dP)
    lse_natural: P rebuilt with exp2 from the natural-log LSE
    dq_factor, dk_factor: dQ and dK times this (sqrt(D): the scale missing)
    """
    parts = parts or exact_parts(q, k, v, do, window, sink)
    q, k_rep, do, lse, s = (parts[name] for name in ("q", "k", "do", "lse", "s"))
    b, hq, n, d = q.shape
    group = parts["group"]
    block_m1, block_n1, block_m2, block_n2 = tiles
    scale = 1.0 / math.sqrt(d)
    p = torch.exp(s - lse[..., None] * (math.log(2) if lse_natural else 1.0))
    w_kv = kv_weights(n, window, sink, block_m1, block_n1, kv_variant, mask)
    w_q = q_weights(n, window, sink, block_m2, block_n2, mask)
    dp, row_delta = parts["dp"], (0.0 if delta == "zero" else parts["row_delta"])
    p_kv, p_q = p * w_kv, p * w_q
    dv_h = p_kv.transpose(-1, -2) @ do
    dk_h = dk_factor * scale * ((p_kv * (dp - row_delta)).transpose(-1, -2) @ q)
    dq = dq_factor * scale * ((p_q * (dp - row_delta)) @ k_rep)
    if heads == "all":
        dk = dk_h.unflatten(1, (-1, group)).sum(2)
        dv = dv_h.unflatten(1, (-1, group)).sum(2)
    elif heads == "first":
        dk, dv = dk_h[:, ::group], dv_h[:, ::group]
    else:
        raise ValueError(f"unknown heads {heads!r}")
    return dq, dk, dv


def _has_hidden_window(case):
    window, sink = _window_sink(case)
    return window < case.L and case.L > max(window, sink)


def _has_far_sinks(case):
    window, sink = _window_sink(case)
    return 0 < sink and case.L > window


_SQRT_D = "sqrt_d"
# code: (re-enactment switches, message, when the mistake can show)
MISTAKES: dict = {
    "group_not_summed": (
        dict(heads="first"),
        "dK and dV of a K/V head hold one query head's contribution: a K/V head is read by every query head "
        "of its group, so its gradients are the sum over the group (group_heads must return all of them); "
        "dQ is right", lambda c: c.H_kv is not None and c.H_kv < c.H),
    "recompute_no_window": (
        dict(mask="no_window"),
        "the window is missing from the recompute's mask: in the masked tiles keys more than W - 1 positions "
        "behind the query get P = exp(s - lse) > 0, but the forward hid them (P must be 0 there unless the "
        "key is a sink)", _has_hidden_window),
    "recompute_no_sinks": (
        dict(mask="no_sinks"),
        "the sinks are missing from the recompute's mask: a sink key j < S behind the window had probability "
        "P = exp(s - lse) > 0 in the forward, but the recompute sets it to 0, so the sinks get no gradient "
        "from those queries", _has_far_sinks),
    "sink_visited_twice": (
        dict(kv_variant="sink_twice"),
        "query blocks are visited twice by a dK/dV program whose keys hold sinks: its sink loop starts where "
        "its window loop starts, so the window's tiles are added to dK and dV twice. The sink loop must start "
        "at the first query block the window loop did not visit", lambda c: _window_sink(c)[1] > 0),
    "sink_queries_skipped": (
        dict(kv_variant="no_sink_loop"),
        "the sink loop never runs: the queries after the window of a sink block also see its sinks, and "
        "their contributions to the sinks' dK and dV are missing", _has_far_sinks),
    "delta_missing": (
        dict(delta="zero"),
        "dS = P * dP: the minus Delta is missing (Delta is zero, or score_grad does not subtract it). The "
        "softmax couples every score of a row, so dS = P * (dP - Delta), with Delta_i = sum_d O_id dO_id "
        "from the preprocess (dV is right: it does not depend on dS)", lambda c: True),
    "lse_base": (
        dict(lse_natural=True),
        "P is rebuilt with exp2 from the natural-log LSE: the scores qk * qk_scale are in base-2 units, so the "
        "LSE must be too; as written every row of P is e^((1 - ln 2) lse_i) times too large", lambda c: True),
    "dk_no_scale": (
        dict(dk_factor=_SQRT_D),
        "dK lacks the softmax scale: S = scale * Q K^T, so dK = scale * dS^T Q (dK is sqrt(D) times too "
        "large; dQ and dV are right)", lambda c: True),
    "dq_no_scale": (
        dict(dq_factor=_SQRT_D),
        "dQ lacks the softmax scale: S = scale * Q K^T, so dQ = scale * dS K (dQ is sqrt(D) times too "
        "large; dK and dV are right)", lambda c: True),
    "dq_dk_no_scale": (
        dict(dq_factor=_SQRT_D, dk_factor=_SQRT_D),
        "dQ and dK lack the softmax scale: S = scale * Q K^T, so dQ = scale * dS K and dK = scale * dS^T Q "
        "(both sqrt(D) times too large; dV, which has no scale, is right)", lambda c: True),
}

# Mistakes whose re-enactment depends on the kernels' tiles.
_TILED = ("recompute_no_window", "recompute_no_sinks", "sink_visited_twice", "sink_queries_skipped")
# Largest B*Hq*L*L the re-enactment is tried on (several float64 L x L matrices): beyond, generic diagnosis.
_REENACT_LIMIT = 2 ** 22


def switches_for(code, head_dim) -> dict:
    """The re-enactment switches of a mistake, with the scale factors for this head dimension."""
    return {key: (math.sqrt(head_dim) if value == _SQRT_D else value)
            for key, value in MISTAKES[code][0].items()}


def backward_diagnoses(fn):
    """`diagnoses=` for assert_grad_cases: this problem's mistakes re-enacted for `fn`'s tiles."""

    def diagnose(got, q, k, v, do, ref, case):
        b, h, n, d = q.shape
        if b * h * n * n > _REENACT_LIMIT:
            return []
        window, sink = _window_sink(case)
        tol = GRAD_TOLERANCES[q.dtype]
        known = tile_sizes(fn, q)
        parts = exact_parts(q, k, v, do, window, sink)
        got = {name: g.cpu() for name, g in got.items()}
        ref = {name: r.cpu() for name, r in ref.items()}
        for code, (_, message, shows) in MISTAKES.items():
            if not shows(case):
                continue
            for tiles in ((known,) if known else _FALLBACK_TILES) if code in _TILED else (known or (16, 32, 32, 16),):
                grads = reenact_backward(q, k, v, do, window, sink, tiles, parts=parts, **switches_for(code, d))
                sim = dict(zip(("dq", "dk", "dv"), grads, strict=True))
                if all(explains(got[name], sim[name], ref[name], tol.atol, tol.rtol) for name in sim):
                    return [Finding(code, message)]
        p = torch.exp(parts["s"] - parts["lse"][..., None]).masked_fill(~attention_mask(n, True, window, sink), 0.0)
        return wrong_delta(got, ref, p, parts["q"], parts["k"], 1.0 / math.sqrt(d), parts["group"], tol,
                           delta=parts["row_delta"][..., 0])

    return [diagnose]


def assert_backward_cases(fn, cases, title="", **kwargs):
    """assert_grad_cases with this problem's mistakes re-enacted for a likely cause."""
    assert_grad_cases(fn, cases, title=title, diagnoses=backward_diagnoses(fn), **kwargs)


# ---------------------------------------------------------------------------------------------
# Block visits: the dK/dV programs count the tiles each program folds in.

def minimal_visits(seq_len, window, sink, block_m, block_n, group=1) -> list[int]:
    """For each key block, the (query block, query head) tiles a dK/dV program that skips every
    hidden tile visits: the query blocks holding a query that sees one of its keys, times the group."""
    mask = attention_mask(seq_len, True, window, sink)
    pad_m, pad_n = (-seq_len) % block_m, (-seq_len) % block_n
    tiles = torch.nn.functional.pad(mask, (0, pad_n, 0, pad_m)).unflatten(0, (-1, block_m)).unflatten(-1, (-1, block_n))
    return [group * int(c) for c in tiles.any(dim=(1, 3)).sum(0).tolist()]


def visit_counts(seq_len, window, sink, block_m, block_n, group=1, variant="right") -> list[int]:
    """Tiles visited per key block by a dK/dV program whose ranges follow `variant`."""
    counts = []
    for k_start in range(0, seq_len, block_n):
        ranges = kv_ranges(k_start, seq_len, window, sink, block_m, block_n, variant)
        counts.append(group * sum(len(range(lo, hi, block_m)) for lo, hi, _ in
                                  kv_segments(k_start, seq_len, window, sink, block_m, block_n, ranges)))
    return counts


def _keys(block_n, seq_len, m):
    first = m * block_n
    return f"keys {first}-{min(first + block_n, seq_len) - 1}"


def visit_findings(counts, seq_len, block_m, block_n, window, sink, group) -> list[Finding]:
    """What is wrong with `counts` (one list of per-key-block tile counts per (batch, K/V head)), or []."""
    want = minimal_visits(seq_len, window, sink, block_m, block_n, group)
    got = next((list(row) for row in counts if list(row) != want), None)
    if got is None:
        return []
    if len(got) != len(want):
        return [Finding("visits_shape", f"{len(got)} key blocks reported visits, expected {len(want)}")]
    m = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
    where = (f"the dK/dV program of {_keys(block_n, seq_len, m)} visited {got[m]} tiles of {block_m} queries, "
             f"and {want[m]} hold a query that sees one of its keys ({group} query head{'s' if group > 1 else ''})")
    if group > 1 and got == [w // group for w in want]:
        return [Finding("group_not_summed", f"each dK/dV program walks the query blocks of one query head: {where}. "
                                            "A K/V head's gradients are the sum over every query head of its group")]
    if any(a < b for a, b in zip(got, want, strict=True)):
        return [Finding("too_few_visits", f"{where}: query blocks that see its keys were skipped")]
    for variant, code, advice in (
            ("sink_twice", "sink_visited_twice", "its sink loop starts inside the window loop, so those query blocks "
                                                 "are visited twice; start it at the first block after the window"),
            ("window_to_end", "visits_outside_window", "its window loop runs to the end of the sequence; end it after "
                                                       "the last query whose window holds the block's last key"),
            ("sink_for_all", "visits_outside_window", "blocks without a sink run a sink loop; only keys j < S are "
                                                      "seen by every later query")):
        try:
            named = got == visit_counts(seq_len, window, sink, block_m, block_n, group, variant)
        except NotRecorded:  # the student edition knows the walks of the visible cases only
            named = False
        if named:
            return [Finding(code, f"{where}: {advice}")]
    return [Finding("visits_outside_window", f"tiles without a visible pair are visited: {where}")]


def check_visits(fn, cases, title=""):
    """Call fn(q, k, v, do, ..., _visits=record) for each case and compare the tiles each dK/dV
    program visited with the minimal ones for the kernel's tiles; one line each, CheckFailed if any differs."""
    def visit_one(case, runtime):
        window, sink = _window_sink(case)
        record: dict = {}
        q, k, v = make_qkv(case, device=runtime.device)
        do = make_grad(case, device=runtime.device)
        with time_limit(DEFAULT_TIMEOUT_S):
            fn(q, k, v, do, **grad_call_kwargs(case), _visits=record)
        counts, bm, bn = visits_reported(record, case.B * (case.H_kv or case.H))
        try:
            findings = visit_findings(counts, case.L, bm, bn, window, sink, case.H // (case.H_kv or case.H))
        except NotRecorded as exc:  # the student edition knows the visible cases' masks only
            findings = [Finding("not_recorded", str(exc))]
        return findings, visit_summary(counts, case, bm, bn)

    check_visit_cases(visit_one, cases, title, unit="tiles")


@SELF_CHECK
def check(fn):
    """Self-check with the visible inputs: the gradients, then the tiles visited."""
    assert_backward_cases(fn, SPEC.self_check_cases, title="Problem 8 self-check (dQ, dK, dV):")
    check_visits(fn, SELF_CHECK_VISITS, title="Problem 8 self-check (tiles the dK/dV programs visit):")


assert SPEC.timing is not None  # the performance cell times against this plan
performance_points = performance.points_function(SPEC.assignment, SPEC.timing, SPEC.performance_points,
                                                gate=check, reference=reference_function)


# ---------------------------------------------------------------------------------------------
# The picture: the tiles one dK/dV program (a column) and one dQ program (a row) visit.

@FIGURE
def plot_backward_programs(seq_len=320, window=72, sink=4, block=64, key_blocks=(0, 1), query_block=3, axes=None):
    """Two panels on the grader's own mask: the tiles the dK/dV programs of `key_blocks` visit (their
    columns: the window's band below the diagonal, and to the end for a block of sinks) and the tiles the
    dQ program of `query_block` visits (its row: the sinks, then the window). M = the recompute masks the
    tile, 1 = a whole tile (no mask)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..plots import plot_mask

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    for ax in axes:
        plot_mask(seq_len, window=window, sink=sink, block_m=block, block_n=block, ax=ax)

    def mark(ax, row, col, masked, color):
        h, w = min(block, seq_len - row), min(block, seq_len - col)
        ax.add_patch(Rectangle((col, row), w, h, lw=2.5, alpha=0.35, color=color))
        ax.text(col + w / 2, row + h / 2, "M" if masked else "1", ha="center", va="center", fontsize=14,
                fontweight="bold", color="white")

    for key_block, color in zip(key_blocks, ("#a50f15", "#08306b", "#006d2c"), strict=False):
        k_start = key_block * block
        ranges = kv_ranges(k_start, seq_len, window, sink, block, block)
        for lo, hi, masked in kv_segments(k_start, seq_len, window, sink, block, block, ranges):
            for row in range(max(lo, 0), hi, block):
                mark(axes[0], row, k_start, masked, color)
    q_start = query_block * block
    for lo, hi, masked in q_segments(q_start, seq_len, window, sink, block, block):
        for col in range(lo, hi, block):
            mark(axes[1], q_start, col, masked, "#08306b")
    axes[0].set_title(f"dK/dV programs of key blocks {', '.join(map(str, key_blocks))}:\n"
                      "each walks down its column of tiles", fontsize=10)
    axes[1].set_title(f"dQ program of query block {query_block}:\nwalks along its row of tiles", fontsize=10)
    return axes


# ---------------------------------------------------------------------------------------------
# Timing: forward + backward and backward alone against FlexAttention with the same block mask.

def backward_flops(batch, heads, head_dim, pairs) -> float:
    """2.5 times the forward's 4*B*Hq*D per visible (query, key) pair: five matmuls against two."""
    return 2.5 * 4.0 * batch * heads * head_dim * pairs


def _flex(seq_len, window, sink):
    """FlexAttention (compiled) with the mask as a block mask: it skips hidden tiles in both directions."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask_mod(b, h, q_idx, kv_idx):
        causal = kv_idx <= q_idx
        return (causal & (q_idx - kv_idx < window)) | (causal & (kv_idx < sink))

    block_mask = create_block_mask(mask_mod, B=None, H=None, Q_LEN=seq_len, KV_LEN=seq_len, device="cuda")
    import torch._functorch.config as functorch_config

    # The backward alone is timed on one saved graph (retain_graph=True); a compiled backward that
    # donates its saved buffers refuses that, so donation is off, as in any eager training step.
    if hasattr(functorch_config, "donated_buffer"):
        functorch_config.donated_buffer = False
    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v: compiled(q, k, v, block_mask=block_mask, enable_gqa=True)


def benchmark(attention, lengths=(4096, 16384, 65536), head_dims=(64, 128), window=1024, sink=4, batch=1,
              heads=16, kv_heads=4, plot_path=None, json_path=None):
    """Time forward+backward and backward alone of `attention(q, k, v, window, sink)` (the notebook's
    `flash_attention_window`) against compiled FlexAttention with the same block mask, in bf16 where
    the GPU has it, with do_bench medians and TFLOPS over the visible pairs only. Prints a table; writes
    `json_path` and `plot_path` when given. Under the CPU interpreter or while grading it says why it
    does nothing."""

    from .. import benchmark as bench
    from .problem7 import _time_pair

    reason = bench.kernel_skip_reason("compare your backward with FlexAttention's")
    if reason:
        print(reason)
        return None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def yours(query, key, value):
        return attention(query, key, value, window, sink)

    rows = []
    for d in head_dims:
        for n in lengths:
            gen = torch.Generator(device="cuda").manual_seed(0)
            q, do = (torch.randn(batch, heads, n, d, device="cuda", dtype=dtype, generator=gen) for _ in range(2))
            k, v = (torch.randn(batch, kv_heads, n, d, device="cuda", dtype=dtype, generator=gen) for _ in range(2))
            pairs = problem6.visible_pairs(n, window, sink)
            fwd, bwd = 4.0 * batch * heads * d * pairs, backward_flops(batch, heads, d, pairs)
            impls: dict[str, Callable[[], Callable]] = {"your kernels": lambda: yours,
                                                        "FlexAttention": functools.partial(_flex, n, window, sink)}
            for name, make in impls.items():
                row = {"impl": name, "B": batch, "Hq": heads, "Hkv": kv_heads, "L": n, "D": d, "W": window,
                       "S": sink, "dtype": str(dtype)[6:]}
                try:
                    both, back = _time_pair(make(), q, k, v, do)
                    rows.append({**row, "fwd_bwd_ms": both, "bwd_ms": back,
                                 "fwd_bwd_tflops": (fwd + bwd) / (both * 1e-3) / 1e12,
                                 "bwd_tflops": bwd / (back * 1e-3) / 1e12})
                except Exception as exc:  # an unsupported peer is a result, not a crash
                    rows.append({**row, "skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"})
            del q, k, v, do
            torch.cuda.empty_cache()
    print(f"{torch.cuda.get_device_name(0)}, {str(dtype)[6:]}, B={batch} Hq={heads} Hkv={kv_heads} W={window} "
          f"S={sink}; do_bench medians; TFLOPS over the visible pairs (backward 2.5x the forward's)")
    print(format_table(rows))
    if json_path:
        bench.save(rows, json_path)
        print(f"wrote {json_path}")
    if plot_path:
        bench.plot_backward(rows, plot_path, ylabel="TFLOPS (visible pairs)")
    return rows


def format_table(rows) -> str:
    """The benchmark's rows as a table, with each kernel's backward speed over FlexAttention's beside it."""
    lines = [f"{'impl':<16}{'D':>5}{'L':>7}{'fwd+bwd ms':>12}{'TFLOPS':>8}{'bwd ms':>10}{'TFLOPS':>8}"
             f"{'bwd vs flex':>13}"]
    peer = {(r["D"], r["L"]): r for r in rows if r["impl"] == "FlexAttention" and "bwd_ms" in r}
    for r in rows:
        head = f"{r['impl']:<16}{r['D']:>5}{r['L']:>7}"
        if "skipped" in r:
            lines.append(f"{head}  skipped: {r['skipped']}")
            continue
        other = peer.get((r["D"], r["L"]))
        ratio = f"{other['bwd_ms'] / r['bwd_ms']:.2f}x" if other and r["impl"] != "FlexAttention" else ""
        lines.append(f"{head}{r['fwd_bwd_ms']:>12.3f}{r['fwd_bwd_tflops']:>8.0f}{r['bwd_ms']:>10.3f}"
                     f"{r['bwd_tflops']:>8.0f}{ratio:>13}")
    return "\n".join(lines)

