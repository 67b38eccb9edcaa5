"""Problem 6: causal attention with a sliding window and attention sinks (with GQA), in Triton.

The mask is the seed's `create_mask_bool`: query i sees keys i-(W-1) .. i (the window) and
keys j < S with j <= i (the sinks). A fast kernel visits only the key blocks that hold a
visible key, each once; the checks here grade that as well as the values:

* `assert_window_cases`: output and LSE against the float64 reference, with this problem's
  mistakes re-enacted in float64 (the kernel's own block walk, with the wrong range or mask)
  so that a wrong output is named by the mistake it matches exactly;
* `check_visits`: the number of key blocks each program visited, reported by the kernel
  itself (`_visits=`), against `block_visits.minimal_visits`.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import performance
from ..block_visits import key_blocks, minimal_visits
from ..checks import (
    DEFAULT_TIMEOUT_S,
    TOLERANCES,
    assert_cases,
    check_visit_cases,
    time_limit,
    visit_summary,
    visits_reported,
)
from ..diagnose import Finding, _explains
from ..feedback_run import FIGURE, SELF_CHECK
from ..inputs import Case, make_qkv
from ..performance import TimingPlan
from ..references import attention_reference, repeat_kv
from . import reference_function
from .spec import ProblemSpec

# The hint ladder (autograder.hints.hint("problem6")): two nudges, then the idea, never the code.
_HINTS = (
    "Start with `visible` and write the two rules of section 2 for one query i and one key j before "
    "thinking in blocks: the window holds W keys counting i itself, so its first key is i - (W - 1); "
    "a sink is a key with j < S, and it is still subject to causality. Then broadcast: q_idx as a column, "
    "k_idx as a row. Check it by hand on a 6 x 6 grid with W = 3, S = 2: row 1 sees keys 0 and 1, "
    "row 5 sees keys 0, 1, 3, 4 and 5.",
    "For `key_block_ranges`, reason about the whole query block [q_start, q_end) with q_end = "
    "min(q_start + BLOCK_M, seq_len): the earliest key any of its queries sees in a window is "
    "q_start - (W - 1) (never below 0), the latest is q_end - 1. Round the window's start down to a "
    "multiple of BLOCK_N. The sinks end at S, but no query here sees a key at or after q_end; round up "
    "to whole blocks. The sink loop must stop where the window loop begins, or a block is counted twice.",
    "visible is section 2's formula as two boolean grids, window and sinks, each also causal, joined by "
    "an or. key_block_ranges, in words: the window loop ends where the block's own queries end, and starts "
    "at the block holding the earliest key its first query sees; the sink loop covers whole blocks up to "
    "the sinks or the block's end, whichever comes first, and never reaches into the window loop's blocks.",
)

SPEC = ProblemSpec(
    assignment="problem6",
    notebook="problem6.ipynb",
    # imports, the given online-softmax update, the student's window rules, the kernel + wrapper.
    kernel_cells=("imports", "online_softmax", "window_rules", "kernel"),
    student_cell="window_rules",
    kernel_function="flash_attention_window",
    answer_policy="triton",
    hints=_HINTS,
    # What a self-learner can run at any time (the same inputs as the visible graded cells).
    self_check_cases=(Case(1, 2, 256, 64, window=128, sink=4, seed=1),
                      Case(1, 4, 200, 32, H_kv=2, window=16, sink=1, seed=2)),
    # Performance points (autograder.performance): the kernel's time over the reference kernel's.
    performance_points=2,
    timing=TimingPlan(gpu_case=Case(1, 16, 16384, 64, H_kv=4, window=1024, sink=4),
                      cpu_case=Case(1, 2, 384, 32, window=64, sink=4)),
)

SELF_CHECK_VISITS = [Case(1, 1, 300, 16, window=16, sink=64), Case(1, 1, 256, 16, window=128, sink=4)]

# Tile shapes a kernel is likely to use, most likely first (the course's kernel uses 64 x 64).
BLOCK_SHAPES = ((64, 64), (128, 64), (128, 128), (64, 32), (128, 32), (32, 32), (16, 16))


# ---------------------------------------------------------------------------------------------
# The kernel's block walk, in plain Python: which key blocks a program visits and where it masks.

def _cdiv(a, b):
    return -(-a // b)


def block_ranges(q_start, seq_len, window, sink, block_m, block_n, variant="right"):
    """(sink_hi, window_lo, window_hi) as `key_block_ranges` returns them, or as a typical mistake does.

    right:         the sink loop stops where the window loop starts
    double_sink:   the sink loop is not capped at window_lo, so blocks both ranges hold are visited twice
    no_sink_loop:  the sink loop is empty
    uncapped_sink: the sink loop runs to S rounded up, ignoring that later queries do not exist here
    causal_walk:   the window loop starts at key 0 (the window is not used to skip blocks)
    all_blocks:    every key block of the sequence
    """
    q_end = min(q_start + block_m, seq_len)
    window_lo = (max(q_start - (window - 1), 0) // block_n) * block_n
    window_hi = q_end
    sink_hi = _cdiv(min(sink, q_end), block_n) * block_n
    if variant == "uncapped_sink":
        sink_hi = _cdiv(sink, block_n) * block_n
    if variant == "no_sink_loop":
        sink_hi = 0
    if variant in ("causal_walk", "all_blocks"):
        window_lo = 0
    if variant == "all_blocks":
        window_hi = seq_len
    if variant != "double_sink":
        sink_hi = min(sink_hi, window_lo)
    return sink_hi, window_lo, window_hi


def kernel_segments(q_start, seq_len, window, sink, block_m, block_n, ranges):
    """The kernel's five loops for one query block: [(lo, hi, masked)], exactly as the locked kernel
    splits your ranges (whole blocks run unmasked; the rest through your `visible`)."""
    sink_hi, window_lo, window_hi = ranges
    sink_full = max(min(min(sink // block_n, (q_start + 1) // block_n) * block_n, sink_hi), 0)
    full_lo = _cdiv(max(q_start + block_m - window, 0), block_n) * block_n
    full_lo = min(max(full_lo, window_lo), max(window_hi, window_lo))
    full_hi = min(max(((q_start + 1) // block_n) * block_n, full_lo), max(window_hi, full_lo))
    return [(0, sink_full, False), (sink_full, sink_hi, True), (window_lo, full_lo, True),
            (full_lo, full_hi, False), (full_hi, window_hi, True)]


def visit_counts(seq_len, block_m, block_n, window, sink, variant="right"):
    """Key blocks visited per query block by a kernel whose ranges follow `variant`."""
    counts = []
    for q_start in range(0, seq_len, block_m):
        sink_hi, window_lo, window_hi = block_ranges(q_start, seq_len, window, sink, block_m, block_n, variant)
        counts.append(len(range(0, sink_hi, block_n)) + len(range(window_lo, window_hi, block_n)))
    return counts


# Masks a student's `visible` may compute instead of the right one: (q, k, W, S) -> bool.
MASKS = {
    "right": lambda q, k, w, s: ((k <= q) & (k > q - w)) | ((k < s) & (k <= q)),
    "window_plus_one": lambda q, k, w, s: ((k <= q) & (k >= q - w)) | ((k < s) & (k <= q)),
    "window_minus_one": lambda q, k, w, s: ((k <= q) & (k > q - w + 1)) | ((k < s) & (k <= q)),
    "no_sinks": lambda q, k, w, s: (k <= q) & (k > q - w),
    "future_sinks": lambda q, k, w, s: ((k <= q) & (k > q - w)) | (k < s),
    "no_window": lambda q, k, w, s: k <= q,
    "sinks_plus_one": lambda q, k, w, s: ((k <= q) & (k > q - w)) | ((k <= s) & (k <= q)),
    "sinks_minus_one": lambda q, k, w, s: ((k <= q) & (k > q - w)) | ((k < s - 1) & (k <= q)),
    "window_ahead": lambda q, k, w, s: ((k >= q) & (k > q - w)) | ((k < s) & (k <= q)),
    "window_reversed": lambda q, k, w, s: ((k <= q) & (k < q - w)) | ((k < s) & (k <= q)),
}


def replay_weights(seq_len, window, sink, block_m, block_n, variant="right", mask="right"):
    """(L, Lpad) float64: how many times the kernel folds key j into query i's softmax.

    1 for a visible key, 0 for a hidden one, 2 for a key in a block visited twice. Keys past the
    end (j >= L) exist here because a masked load pads them with zeros: a wrong mask can let
    those zero keys in, and the replay must count them as the kernel does.
    """
    rule = MASKS[mask]
    width = _cdiv(max(seq_len, sink) + block_n, block_n) * block_n
    weights = torch.zeros(seq_len, width, dtype=torch.float64)
    for q_start in range(0, seq_len, block_m):
        q_end = min(q_start + block_m, seq_len)
        q = torch.arange(q_start, q_end)[:, None]
        ranges = block_ranges(q_start, seq_len, window, sink, block_m, block_n, variant)
        for lo, hi, masked in kernel_segments(q_start, seq_len, window, sink, block_m, block_n, ranges):
            if hi <= lo:
                continue
            hi = lo + _cdiv(hi - lo, block_n) * block_n   # a loop visits whole blocks
            k = torch.arange(lo, hi)[None, :]
            seen = rule(q, k, window, sink) if masked else torch.ones(q.shape[0], hi - lo, dtype=torch.bool)
            weights[q_start:q_end, lo:hi] += seen.double()
    return weights


def replay(q, k, v, weights):
    """Attention in float64 where key j enters query i's softmax weights[i, j] times."""
    q, k, v = (t.detach().double().cpu() for t in (q, k, v))
    hq, hkv = q.shape[1], k.shape[1]
    k, v = repeat_kv(k, hq // hkv), repeat_kv(v, hq // hkv)
    pad = weights.shape[1] - k.shape[2]
    k = torch.nn.functional.pad(k, (0, 0, 0, pad))   # zero keys and values, as a masked load gives
    v = torch.nn.functional.pad(v, (0, 0, 0, pad))
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(weights == 0, float("-inf"))
    e = torch.exp(s - s.amax(-1, keepdim=True)) * weights
    return (e @ v) / e.sum(-1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# Diagnoses: each re-enacts one mistake in float64 and names it when the output matches.

def _window_sink(case):
    w = case.L if case.window is None else case.window
    return w, case.sink or 0


def _match(o, q, k, v, ref, case, variant="right", mask="right"):
    """The tile shape under which the kernel with this mistake gives exactly `o`, or None."""
    tol = TOLERANCES.get(q.dtype, TOLERANCES[torch.float16])
    w, s = _window_sink(case)
    for bm, bn in BLOCK_SHAPES:
        sim = replay(q, k, v, replay_weights(case.L, w, s, bm, bn, variant, mask))
        if _explains(o, sim, ref, tol.atol, tol.rtol):
            return bm, bn
    return None


def _matches_reference(o, q, k, v, ref, **mask_kwargs):
    tol = TOLERANCES.get(q.dtype, TOLERANCES[torch.float16])
    sim, _ = attention_reference(q.cpu(), k.cpu(), v.cpu(), **mask_kwargs)
    return _explains(o, sim, ref, tol.atol, tol.rtol)


def _prepare(o64, q, k, v, ref_o):
    return o64.detach().double().cpu(), q.detach().cpu(), k.detach().cpu(), v.detach().cpu(), ref_o.double().cpu()


def _one_off(o, q, k, v, ref, case, candidates):
    """The first (window, sinks, mask) of `candidates` whose mask explains `o`: ((window, sinks),
    where), `where` saying whether it holds everywhere or in the masked tiles only; or None."""
    for wrong_w, wrong_s, mask in candidates:
        if wrong_w < 1 or wrong_s < 0:
            continue
        if _matches_reference(o, q, k, v, ref, is_causal=True, window_size=wrong_w, sink_size=wrong_s):
            return (wrong_w, wrong_s), ""
        if _match(o, q, k, v, ref, case, mask=mask):
            return (wrong_w, wrong_s), " in the masked tiles"
    return None


def diagnose_sink_twice(o64, q, k, v, ref_o, case):
    o, q, k, v, ref = _prepare(o64, q, k, v, ref_o)
    w, s = _window_sink(case)
    if not s or torch.isnan(o).any():
        return []
    shape = _match(o, q, k, v, ref, case, variant="double_sink")
    if shape:
        return [Finding("sink_visited_twice", f"a sink block is visited twice (the output matches that exactly, "
                                              f"with {shape[0]}x{shape[1]} tiles): where the window loop already "
                                              "starts at block 0, the sink loop visits the same block again and "
                                              "its keys count twice in the softmax; the sink loop must end where "
                                              "the window loop begins")]
    return []


def diagnose_window_off_by_one(o64, q, k, v, ref_o, case):
    o, q, k, v, ref = _prepare(o64, q, k, v, ref_o)
    w, s = _window_sink(case)
    if w >= case.L or torch.isnan(o).any():
        return []
    found = _one_off(o, q, k, v, ref, case, ((w + 1, s, "window_plus_one"), (w - 1, s, "window_minus_one")))
    if found:
        (wrong, _), where = found
        return [Finding("window_off_by_one", f"the window is off by one: the output matches a window of "
                                             f"{wrong} keys instead of {w}{where}. Query i sees W keys counting "
                                             "itself: i-(W-1) .. i")]
    return []


def diagnose_sinks_ignored(o64, q, k, v, ref_o, case):
    o, q, k, v, ref = _prepare(o64, q, k, v, ref_o)
    w, s = _window_sink(case)
    if not s or torch.isnan(o).any():
        return []
    if _matches_reference(o, q, k, v, ref, is_causal=True, window_size=w, sink_size=0) or \
            _match(o, q, k, v, ref, case, mask="no_sinks"):
        return [Finding("sinks_ignored", f"the sinks are ignored: the output matches attention with the window "
                                         f"alone (S=0 instead of {s}); keys j < S stay visible to every query "
                                         "i >= j, however far back they are")]
    if _match(o, q, k, v, ref, case, variant="no_sink_loop"):
        return [Finding("sink_blocks_skipped", "the sink blocks are never visited: the output matches a kernel whose "
                                               "sink loop is empty, so only the sinks that happen to "
                                               "lie inside the window are seen")]
    return []


def diagnose_future_sinks(o64, q, k, v, ref_o, case):
    o, q, k, v, ref = _prepare(o64, q, k, v, ref_o)
    w, s = _window_sink(case)
    if not s:
        return []
    for variant in ("right", "uncapped_sink"):
        if _match(o, q, k, v, ref, case, variant=variant, mask="future_sinks"):
            return [Finding("future_sinks", f"queries see sink keys that come after them: the output matches a "
                                            f"sink rule of j < {s} without j <= i. A sink is still causal: query "
                                            "i may attend to key j only if j <= i")]
    return []


def diagnose_sinks_off_by_one(o64, q, k, v, ref_o, case):
    o, q, k, v, ref = _prepare(o64, q, k, v, ref_o)
    w, s = _window_sink(case)
    if not s or torch.isnan(o).any():
        return []
    # S - 1 = 0 sinks is diagnose_sinks_ignored's.
    found = _one_off(o, q, k, v, ref, case, ((w, s + 1, "sinks_plus_one"), (w, s - 1, "sinks_minus_one")))
    if found and found[0][1]:
        (_, wrong), where = found
        return [Finding("sinks_off_by_one", f"the sinks are off by one: the output matches {wrong} sink keys "
                                            f"instead of {s}{where}. The sinks are keys 0 .. S-1: j < S")]
    return []


# A comparison of the window test turned around: the mask (MASKS) and what the finding says.
WINDOW_TURNED = {
    "window_ahead": "queries see keys after them: the output matches a window test j >= i where it must be "
                    "j <= i (in the tiles the kernel visits). Query i sees i-(W-1) .. i, itself and the keys "
                    "before it",
    "window_reversed": "the window's far edge is turned around: the output matches queries seeing the keys more "
                       "than W back (j < i - W) instead of the W nearest (j > i - W), in the tiles the kernel "
                       "visits",
}


def diagnose_window_direction(o64, q, k, v, ref_o, case):
    o, q, k, v, ref = _prepare(o64, q, k, v, ref_o)
    if torch.isnan(o).any():
        return []
    for mask, message in WINDOW_TURNED.items():
        if _match(o, q, k, v, ref, case, mask=mask):
            return [Finding(mask, message)]
    return []


def diagnose_window_not_applied(o64, q, k, v, ref_o, case):
    o, q, k, v, ref = _prepare(o64, q, k, v, ref_o)
    w, s = _window_sink(case)
    if w >= case.L or torch.isnan(o).any():
        return []
    if _matches_reference(o, q, k, v, ref, is_causal=True) or _match(o, q, k, v, ref, case, mask="no_window"):
        return [Finding("window_not_applied", f"the window is not applied: the output matches plain causal "
                                              f"attention in the blocks the kernel visits; keys more than "
                                              f"W-1 = {w - 1} positions back must be hidden unless they are sinks")]
    return []


DIAGNOSES = (diagnose_sink_twice, diagnose_window_off_by_one, diagnose_future_sinks, diagnose_sinks_ignored,
             diagnose_sinks_off_by_one, diagnose_window_not_applied, diagnose_window_direction)


def assert_window_cases(fn, cases, title="", **kwargs):
    """assert_cases with this problem's mistakes re-enacted for a likely cause."""
    assert_cases(fn, cases, title=title, diagnoses=DIAGNOSES, **kwargs)


# ---------------------------------------------------------------------------------------------
# Block visits: the kernel counts the key blocks each program folds in.

def _rows(block_m, seq_len, m):
    first = m * block_m
    return f"queries {first}-{min(first + block_m, seq_len) - 1}"


def visit_findings(counts, seq_len, block_m, block_n, window, sink) -> list[Finding]:
    """What is wrong with `counts` (one list of per-query-block visit counts per (batch, head)), or []."""
    want = minimal_visits(seq_len, block_m, block_n, causal=True, window=window, sink=sink)
    for row in counts:
        if list(row) != want:
            got = list(row)
            break
    else:
        return []
    if len(got) != len(want):
        return [Finding("visits_shape", f"{len(got)} query blocks reported visits, expected {len(want)}")]
    m = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
    where = (f"the program for {_rows(block_m, seq_len, m)} visited {got[m]} key blocks of {block_n}, "
             f"and {want[m]} {'holds' if want[m] == 1 else 'hold'} keys it may see "
             f"({key_blocks(m * block_m, (m + 1) * block_m, seq_len, block_n, True, window, sink)})")
    if any(a < b for a, b in zip(got, want, strict=True)):
        m = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a < b)
        return [Finding("too_few_visits", f"the program for {_rows(block_m, seq_len, m)} visited {got[m]} key "
                                          f"blocks, but {want[m]} hold keys it may see: visible keys were skipped")]
    if got == visit_counts(seq_len, block_m, block_n, window, sink, "double_sink"):
        return [Finding("sink_visited_twice", f"a sink block is visited twice: {where}. The sink loop visits a "
                                              "block that the window loop visits again; end the sink loop where "
                                              "the window loop begins")]
    if got == visit_counts(seq_len, block_m, block_n, window, sink, "all_blocks"):
        return [Finding("visits_all_blocks", f"every program visits all {got[0]} key blocks: {where}. The mask "
                                             "hides the rest, so the values are right, but the time grows with "
                                             "L^2: skip the blocks outside the window and the sinks")]
    if got == visit_counts(seq_len, block_m, block_n, window, sink, "causal_walk"):
        return [Finding("window_not_skipped", f"the kernel visits every block up to the diagonal, as a causal "
                                              f"kernel does: {where}. Start the window loop at the block holding "
                                              "key q_start - (W - 1)")]
    return [Finding("visits_outside_window", f"blocks without a visible key are visited: {where}")]


def check_visits(fn, cases, title=""):
    """Call fn(..., _visits=record) for each case and compare the per-program visit counts with the
    minimal ones for the kernel's block sizes; one line each, CheckFailed if any differs."""
    def visit_one(case, runtime):
        w, s = _window_sink(case)
        record: dict = {}
        q, k, v = make_qkv(case, device=runtime.device)
        with time_limit(DEFAULT_TIMEOUT_S):
            fn(q, k, v, window_size=w, sink_size=s, _visits=record)
        counts, bm, bn = visits_reported(record, case.B * case.H)
        return visit_findings(counts, case.L, bm, bn, w, s), visit_summary(counts, case, bm, bn)

    check_visit_cases(visit_one, cases, title, unit="blocks")


@SELF_CHECK
def check(fn):
    """Self-check with the visible inputs: values, then block visits."""
    assert_window_cases(fn, SPEC.self_check_cases, title="Problem 6 self-check (output and log-sum-exp):")
    check_visits(fn, SELF_CHECK_VISITS, title="Problem 6 self-check (key blocks visited):")


assert SPEC.timing is not None  # the performance cell times against this plan
performance_points = performance.points_function(SPEC.assignment, SPEC.timing, SPEC.performance_points,
                                                gate=check, reference=reference_function)


# ---------------------------------------------------------------------------------------------
# The picture and the benchmark.

@FIGURE
def plot_masks(seq_len=96, window=24, sink=8, block=16):
    """Three masks side by side, from the grader's own mask function: causal, window, window + sinks."""
    import matplotlib.pyplot as plt

    from ..plots import plot_mask

    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    plot_mask(seq_len, block_m=block, block_n=block, ax=axes[0])
    plot_mask(seq_len, window=window, block_m=block, block_n=block, ax=axes[1])
    plot_mask(seq_len, window=window, sink=sink, block_m=block, block_n=block, ax=axes[2])
    fig.tight_layout()
    return fig


def visible_pairs(seq_len, window, sink) -> int:
    """Number of (query, key) pairs the mask lets through: what the kernel computes, for TFLOPS."""
    i = torch.arange(seq_len, dtype=torch.int64)
    in_window = torch.clamp(i + 1, max=window)
    sinks_before_window = torch.clamp(torch.minimum(torch.full_like(i, sink), i - window + 1), min=0)
    return int((in_window + sinks_before_window).sum())


def _flex_peer(seq_len, window, sink, enable_gqa):
    """FlexAttention with the same mask as a block mask (compiled, as its documentation asks)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask_mod(b, h, q_idx, kv_idx):
        causal = kv_idx <= q_idx
        return (causal & (q_idx - kv_idx < window)) | (causal & (kv_idx < sink))

    block_mask = create_block_mask(mask_mod, B=None, H=None, Q_LEN=seq_len, KV_LEN=seq_len, device="cuda")
    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v: compiled(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)


def _sdpa_dense_peer(seq_len, window, sink, enable_gqa):
    """SDPA with the mask as a dense (L x L) boolean tensor, memory-efficient backend pinned."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ..references import create_mask_bool

    mask = create_mask_bool(seq_len, window, sink, device="cuda")

    def run(q, k, v):
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=enable_gqa)
    return run


def benchmark(fn, lengths=(4096, 16384, 65536), window=1024, sink=4, head_dim=128, batch=1, heads=16,
              kv_heads=None, plot_path=None):
    """Time `fn` at a fixed window against FlexAttention (same block mask) and SDPA (dense mask).

    Under the CPU interpreter, or while grading, this only says why it does nothing.
    """
    from .. import benchmark as bench

    reason = bench.kernel_skip_reason("see the time grow linearly with L")
    if reason:
        print(reason)
        return None
    kv_heads = heads if kv_heads is None else kv_heads
    gqa = kv_heads != heads
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
        has_flex = True
    except ImportError:
        has_flex = False
        print(f"FlexAttention is not in torch {torch.__version__} (it needs torch >= 2.5): timing without it.")
    reference = reference_function(SPEC.assignment)
    rows = []
    for n in lengths:
        gen = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(batch, heads, n, head_dim, device="cuda", dtype=dtype, generator=gen)
        k, v = (torch.randn(batch, kv_heads, n, head_dim, device="cuda", dtype=dtype, generator=gen)
                for _ in range(2))
        flops = 4.0 * batch * heads * head_dim * visible_pairs(n, window, sink)
        # a function to time, or (kind, maker, n): a peer made for this length when its turn comes
        impls: dict[str, Callable | tuple[str, Callable, int]] = {
            "your kernel": lambda q, k, v: fn(q, k, v, window_size=window, sink_size=sink)[0]}
        if reference is not None:  # the course's own kernel, where its sources are at hand
            impls["reference kernel"] = lambda q, k, v: reference(q, k, v, window_size=window, sink_size=sink)[0]
        if has_flex:
            impls["FlexAttention"] = ("flex", _flex_peer, n)
        dense_bytes = n * n * (1 + 2 * q.element_size())  # the bool mask and the bias SDPA makes of it
        impls["SDPA dense mask"] = ("sdpa", _sdpa_dense_peer, n)
        for name, impl in impls.items():
            row = {"impl": name, "B": batch, "H": heads, "L": n, "D": head_dim, "dtype": str(dtype)[6:]}
            try:
                if isinstance(impl, tuple):
                    kind, make, _ = impl
                    if kind == "sdpa" and dense_bytes > 0.5 * torch.cuda.mem_get_info()[0]:
                        rows.append({**row, "skipped": f"the dense mask alone needs ~{dense_bytes / 2**30:.0f} GiB"})
                        continue
                    impl = make(n, window, sink, gqa)
                m = bench.measure(impl, q, k, v)
                rows.append({**row, **m, "tflops": flops / (m["ms"] * 1e-3) / 1e12})
            except Exception as exc:  # an unsupported peer is a result, not a crash
                rows.append({**row, "skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"})
            torch.cuda.empty_cache()
    print(f"window W={window}, sinks S={sink}, Hq={heads} Hkv={kv_heads}, {str(dtype)[6:]}; TFLOPS count only "
          "the (query, key) pairs the mask lets through")
    print(bench.format_table(rows))
    mine = {r["L"]: r["ms"] for r in rows if r["impl"] == "your kernel" and "ms" in r}
    if len(mine) > 1:
        first = min(mine)
        print(f"your kernel, time relative to L={first}: "
              + ", ".join(f"L={n}: {mine[n] / mine[first]:.1f}x for {n / first:g}x the tokens" for n in sorted(mine)))
    for n in sorted(mine):
        for r in rows:
            if r["L"] == n and r["impl"] != "your kernel" and "ms" in r:
                print(f"L={n}: your kernel is {r['ms'] / mine[n]:.2f}x as fast as {r['impl']}")
    bench.plot(rows, plot_path, title=f"W={window} S={sink} B={batch} H={heads} D={head_dim} on "
                                      f"{torch.cuda.get_device_name(0)}")
    return rows
