"""Problem 2: the online softmax, then tiled attention in plain PyTorch built on it.

The student writes two plain functions (no Triton yet):

* `online_softmax(x, block_size)`: the softmax of each row of a 2-D tensor, computed with one
  pass that reads x one block of columns at a time (running max m and running sum l), then one
  pass that writes the probabilities;
* `tiled_attention(q, k, v, block_n=64) -> (o, lse)`: non-causal attention over blocks of keys
  with the same recurrence plus an accumulator, never holding a whole Lq x Lk score matrix.

This module holds the checks of both (one printed line per case, a likely cause when wrong),
the re-enactments of the typical mistakes that name those causes, the memory check that keeps
the attention honest, a figure, the hints and the benchmark.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..checks import (
    DEFAULT_TIMEOUT_S,
    TOLERANCES,
    Tolerance,
    assert_cases,
    conclude,
    run_each,
    time_limit,
    unless_unrecorded,
)
from ..diagnose import Finding, _explains, describe_exception
from ..feedback_run import FIGURE, SELF_CHECK
from ..inputs import Case, check_choice
from ..integrity import mutated, snapshot, watch_call
from ..references import attention_reference
from ..verdict import CaseVerdict
from .online_softmax_faults import blockwise_attention, diagnose_online_softmax
from .spec import ProblemSpec

_HINTS = (
    "Start with online_softmax on paper for one row and two blocks. After the first block you know "
    "m1 (its max) and l1 (its sum of exp(x - m1)). The second block brings m2 = max(m1, its own max). "
    "Every term already inside l1 was measured against m1; what single factor turns it into a term "
    "measured against m2?",
    "Keep per row: m (starts at -inf) and l (starts at 0). For each block: the new max, the factor "
    "alpha = exp(m_old - m_new), l scaled by alpha plus this block's sum of exp(x - m_new). A row whose "
    "blocks so far were all -inf still has m = -inf, and exp(-inf - (-inf)) is NaN: use 0 in place of "
    "the max while it is -inf. tiled_attention is the same loop over key blocks with scores "
    "s = q k^T / sqrt(D) of one block, plus acc, which alpha rescales just like l.",
    "online_softmax: one loop computes m and l block by block; then a second, vectorised pass turns the "
    "whole row into probabilities with the final m and l. tiled_attention: work in float32; per key block "
    "the block's scores, the new max, alpha, the block's probabilities against the new max, then l and "
    "acc each re-based by alpha and grown by this block's share; after the last block (the partial one "
    "too) normalise acc, cast it back to q's dtype, and build the LSE from the max and the sum.",
)

SPEC = ProblemSpec(
    assignment="problem2",
    notebook="problem2.ipynb",
    # The answer cell holds plain PyTorch functions; `imports` gives it torch and math.
    kernel_cells=("imports", "answer"),
    student_cell="answer",
    kernel_function="tiled_attention",
    answer_policy="torch",
    hints=_HINTS,
    # The visible tiled_attention cases (SELF_CHECK_SOFTMAX holds online_softmax's).
    self_check_cases=(Case(1, 2, 128, 64, "float32"), Case(2, 2, 200, 32, "float32", seed=1)),
)

# ---------------------------------------------------------------------------------------------
# Part 1: online_softmax
# ---------------------------------------------------------------------------------------------

SOFTMAX_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Probabilities lie in [0, 1]. A float32 online softmax is off by a few ulps per exp plus the
# rounding of a sum of N terms (about sqrt(N) * 2**-24 relative): well inside 1e-5. Float64
# is held to float64 standards.
SOFTMAX_TOLERANCES = {
    torch.float32: Tolerance(atol=1e-6, rtol=1e-5),
    torch.float64: Tolerance(atol=1e-12, rtol=1e-9),
}
# Which entries a case sets to -inf (as an attention mask would):
#   first_block:  the whole first block of every even row (the running max is still -inf after it)
#   middle_block: the second block of every odd row
#   row:          the whole last row (it has no softmax: NaN, as torch.softmax gives)
MASKS = ("first_block", "middle_block", "row")


@dataclass(frozen=True)
class SoftmaxCase:
    """One input for online_softmax: a (rows, cols) tensor of logits, read in blocks."""
    rows: int
    cols: int
    block_size: int
    dtype: str = "float32"
    logit_scale: float = 1.0      # the logits are N(0, 1) times this: 1e4 breaks a naive exp
    masked: tuple = ()            # names from MASKS
    seed: int = 0

    def __post_init__(self):
        check_choice("dtype", self.dtype, SOFTMAX_DTYPES)
        unknown = set(self.masked) - set(MASKS)
        if unknown:
            raise ValueError(f"unknown masks {sorted(unknown)}; known: {MASKS}")

    @property
    def torch_dtype(self):
        return SOFTMAX_DTYPES[self.dtype]

    def label(self) -> str:
        scale = "" if self.logit_scale == 1.0 else f" logits x{self.logit_scale:g}"
        masked = f" -inf {'+'.join(m.split('_')[0] for m in self.masked)}" if self.masked else ""
        return f"{self.rows}x{self.cols} block={self.block_size} {self.dtype}{scale}{masked}"


def make_logits(case: SoftmaxCase, device="cpu") -> torch.Tensor:
    """Seeded N(0, 1) * logit_scale logits, with the case's -inf entries."""
    gen = torch.Generator().manual_seed(case.seed)
    x = torch.randn(case.rows, case.cols, generator=gen, dtype=torch.float64) * case.logit_scale
    b = case.block_size
    if "first_block" in case.masked:
        x[0::2, :b] = -math.inf
    if "middle_block" in case.masked:
        x[1::2, b:2 * b] = -math.inf
    if "row" in case.masked:
        x[-1] = -math.inf
    return x.to(device=device, dtype=case.torch_dtype)


def softmax_reference(x: torch.Tensor) -> torch.Tensor:
    """torch.softmax in float64: a row that is -inf everywhere comes out NaN (0/0)."""
    return torch.softmax(x.double(), dim=-1)


def simulate_online_softmax(x: torch.Tensor, block_size: int, fault: str = "", dtype=torch.float64):
    """The online softmax with one typical mistake switched on, computed in `dtype`.

    fault: "" (none), "no_l_rescale", "alpha_inverted", "no_safe_max", "no_max_subtraction",
    "dropped_tail", "dropped_tail_zero" (the tail block's outputs left at 0), "no_normalise".
    """
    x = x.to(dtype)
    rows, n = x.shape
    m = torch.full((rows,), -math.inf, dtype=dtype)
    l = torch.zeros(rows, dtype=dtype)
    end = (n // block_size) * block_size if fault.startswith("dropped_tail") else n
    for start in range(0, end, block_size):
        block = x[:, start:start + block_size]
        m_new = torch.zeros_like(m) if fault == "no_max_subtraction" else torch.maximum(m, block.amax(dim=1))
        m_safe = m_new if fault == "no_safe_max" else torch.where(m_new == -math.inf, 0.0, m_new)
        alpha = torch.exp(m_safe - m) if fault == "alpha_inverted" else torch.exp(m - m_safe)
        l = (l if fault == "no_l_rescale" else l * alpha) + torch.exp(block - m_safe[:, None]).sum(dim=1)
        m = m_new
    out = torch.exp(x - m[:, None])
    if fault == "no_normalise":
        return out
    out = out / l[:, None]
    if fault == "dropped_tail_zero":
        out[:, end:] = 0
    return out


# (finding code, fault re-enacted by simulate_online_softmax, what to tell the student), tried in order.
SOFTMAX_FAULTS = (
    ("nan_masked_block", "no_safe_max",
     "rows whose first block is all -inf came out NaN: while a row's max is still -inf, the rescale "
     "factor is exp(-inf - (-inf)) = NaN. Until the row has seen a finite value, measure against a finite "
     "stand-in for the max, so that exp(-inf - stand-in) = 0"),
    ("no_l_rescale", "no_l_rescale",
     "the running sum is not rescaled when the max grows: every term in it was measured against the old "
     "max, so re-base it onto the new one before adding the new block's sum"),
    ("alpha_inverted", "alpha_inverted",
     "alpha is inverted: re-basing the old sum onto a larger max must shrink it (alpha <= 1), and this "
     "alpha grows it"),
    ("dropped_tail", "dropped_tail",
     "the last, partial block of columns is never read: when N is not a multiple of block_size the loop "
     "must also visit the shorter last block"),
    ("dropped_tail", "dropped_tail_zero",
     "the last, partial block of columns is never read (its outputs stay 0): the loop must also visit "
     "the shorter last block"),
    ("no_normalise", "no_normalise",
     "the output is not divided by the running sum l: the rows do not sum to 1"),
)
_OVERFLOW_MESSAGE = ("no max subtraction: exp overflows with logits of {big:.3g} (the largest {dtype} exp "
                     "is exp({limit:.1f})), and inf / inf is NaN. Measure every value against the running max "
                     "before taking exp, so that no exponent is positive")


def _matches(o, sim, ref, tol: Tolerance) -> bool:
    """Does the re-enacted mistake `sim` explain `o`, NaN and inf included?"""
    if o.shape != sim.shape:
        return False
    # Compared in float64: a re-enactment in the input's dtype (float32) meets a float64 answer.
    o, sim, ref = o.double(), sim.double(), ref.double()
    bad_o, bad_sim = ~torch.isfinite(o), ~torch.isfinite(sim)
    if not torch.equal(bad_o, bad_sim):
        return False
    fine = ~bad_sim
    if not fine.any():
        return True
    ref = torch.nan_to_num(ref, nan=0.0)
    return _explains(o[fine], sim[fine], ref[fine], tol.atol * 10, tol.rtol * 10)


def _overflow_finding(bad_rows, row_max, dtype) -> Finding | None:
    """Non-finite output rows that are exactly the rows where exp(max) overflows in some
    working dtype (the input's, float32 or float64): the max was not subtracted."""
    if not bad_rows.any():
        return None
    for work in dict.fromkeys((dtype, torch.float32, torch.float64)):
        limit = math.log(torch.finfo(work).max)
        over = row_max > limit
        near = (row_max - limit).abs() < 1.0   # rounding can tip a row either way at the edge
        if over.any() and torch.equal((bad_rows & ~near), (over & ~near)):
            big = float(row_max[bad_rows].max())
            return Finding("no_max_subtraction", _OVERFLOW_MESSAGE.format(
                big=big, dtype=str(work).replace("torch.", ""), limit=limit))
    return None


def diagnose_softmax(out, x, block_size: int, ref, tol: Tolerance) -> list[Finding]:
    """Likely causes for a wrong online softmax, strongest evidence first."""
    out = out.detach().double().cpu()
    x = x.detach().cpu()
    ref = ref.cpu()
    finite_ref = torch.isfinite(ref)
    neg_inf = x == -math.inf
    restarts = neg_inf[:, :block_size].all(dim=1) & ~neg_inf.all(dim=1)  # all -inf first block, then more
    for code, fault, message in SOFTMAX_FAULTS:
        if fault == "no_safe_max" and not restarts.any():
            continue  # the fault changes nothing on this input
        if fault.startswith("dropped_tail") and x.shape[1] % block_size == 0:
            continue
        sim = simulate_online_softmax(x, block_size, fault)
        if _matches(out, sim, ref, tol):
            return [Finding(code, f"{message} (the output matches that mistake with block_size={block_size})")]
    row_max = x.double().amax(dim=1)
    overflow = _overflow_finding((~torch.isfinite(out) & finite_ref).any(dim=1), row_max, x.dtype)
    if overflow is None and _matches(out, simulate_online_softmax(x, block_size, "no_max_subtraction", x.dtype),
                                     ref, tol):
        overflow = Finding("no_max_subtraction", _OVERFLOW_MESSAGE.format(
            big=float(row_max.max()), dtype=str(x.dtype).replace("torch.", ""),
            limit=math.log(torch.finfo(x.dtype).max)))
    if overflow:
        return [overflow]
    all_masked = ~finite_ref.any(dim=1)
    if all_masked.any() and torch.isfinite(out[all_masked]).all():
        return [Finding("masked_row", "a row that is -inf everywhere has no softmax; the convention here is "
                                      "torch.softmax's: NaN in every entry (exp(x - m) / l is 0/0 there)")]
    if (~torch.isfinite(out) & finite_ref).any():
        rows = (~torch.isfinite(out) & finite_ref).any(dim=1).nonzero().flatten().tolist()
        return [Finding("some_nan", f"NaN or inf in rows {rows[:5]} whose softmax exists: look for "
                                    "exp(-inf - (-inf)) or a division by l = 0")]
    sums = out[finite_ref.any(dim=1)].sum(dim=1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
        return [Finding("row_sums", f"the rows sum to between {float(sums.min()):.4g} and {float(sums.max()):.4g} "
                                    "instead of 1: check the running sum l")]
    return []


SOFTMAX_LABEL_WIDTH = 46  # the softmax cases' labels are longer than attention's


def _softmax_verdict(case: SoftmaxCase, passed: bool, summary: str, findings=(), **figures) -> CaseVerdict:
    return CaseVerdict(case.label(), passed, summary, list(findings), case=case, width=SOFTMAX_LABEL_WIDTH,
                       **figures)


def run_softmax_case(fn, case: SoftmaxCase, device="cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> CaseVerdict:
    """Call fn(x, case.block_size) on the case's logits and compare with torch.softmax in float64."""
    x = make_logits(case, device)
    before = snapshot((x,))

    def fail(summary, findings, **figures):
        return _softmax_verdict(case, False, summary, findings, **figures)

    try:
        with time_limit(timeout_s), watch_call((x,)) as watched:
            out = fn(x, case.block_size)
    except Exception as exc:  # student code may raise anything; the verdict must not crash
        return fail("the call did not return", [describe_exception(exc)])
    builtin = sorted(op for op in watched.ops if "softmax" in op or "logsumexp" in op)
    if builtin:
        return fail("not computed by your code", [Finding(
            "uses_builtin_softmax", "it calls PyTorch's " + ", ".join(builtin)
            + "; the exercise is to compute the softmax with the running max and sum yourself")])
    if mutated(before, (x,)):
        return fail("input modified", [Finding("mutated_inputs", "it wrote into x; the input is read-only")])
    if not isinstance(out, torch.Tensor):
        return fail("wrong return value", [Finding("bad_return", f"returned {type(out).__name__}; "
                                                                 "return one tensor shaped like x")])
    if out.shape != x.shape or out.dtype != x.dtype:
        return fail("wrong return value", [Finding("bad_return", f"returned {out.dtype} {tuple(out.shape)}; "
                                                                 f"expected {x.dtype} {tuple(x.shape)}")])
    ref = softmax_reference(x)
    tol = SOFTMAX_TOLERANCES[x.dtype]
    out64 = out.detach().double()
    bad = ~torch.isclose(out64, ref, atol=tol.atol, rtol=tol.rtol, equal_nan=True)
    finite = torch.isfinite(ref)
    if bad.any():
        err = (out64 - ref)[finite].abs().nan_to_num(math.inf).max().item() if finite.any() else math.inf
        rows = bad.any(dim=1).nonzero().flatten().tolist()
        where = f"rows {rows[:4]}{'...' if len(rows) > 4 else ''} ({len(rows)} of {case.rows} wrong)"
        return fail(f"max|err| {err:.2g} > tol {tol.atol:g}; {where}",
                    unless_unrecorded(diagnose_softmax, out64, x, case.block_size, ref, tol), max_error=err,
                    tolerance=tol.atol,
                    where=where)
    err = (out64 - ref)[finite].abs().max().item() if finite.any() else 0.0
    return _softmax_verdict(case, True, f"max|err| {err:.1e} (tol {tol.atol:g})", max_error=err,
                            tolerance=tol.atol)


def check_online_softmax(fn, cases, title: str = "") -> None:
    """One line per case; raise CheckFailed naming the likely cause if any case fails."""
    from .. import device as device_mod

    conclude(run_each(run_softmax_case, fn, cases, title, device=device_mod.current().device))


# ---------------------------------------------------------------------------------------------
# Part 2: tiled_attention
# ---------------------------------------------------------------------------------------------

# The largest key block a reasonable tiled solution uses; blocks up to this size never trip the
# memory check (the notebook asks for 64).
MAX_BLOCK_N = 128


def score_matrix_limit(q_shape, k_shape, v_shape):
    """(limit, what) for the memory check, or None when this shape cannot tell a block from the whole.

    A tiled solution holds at most a block of scores for every row, B*H*Lq*block_n elements
    (block_n <= MAX_BLOCK_N), and tensors the size of its inputs and outputs, B*H*L*D. The
    whole score matrix of one head is Lq*Lk elements. When everything allowed is smaller than
    one head's matrix, anything that large is a materialised matrix (also one built head by
    head); when it is only smaller than all heads' matrices together, that is the limit.
    """
    b, h, lq, d = q_shape
    lk, dv = k_shape[2], v_shape[-1]
    allowed = b * h * max(lq, lk) * max(d, dv, MAX_BLOCK_N)
    head = lq * lk
    if allowed < head:
        return head, f"one head's whole {lq} x {lk} score matrix"
    if allowed < b * h * head:
        return b * h * head, f"the whole (B, H, {lq}, {lk}) score matrix"
    return None


def no_score_matrix(watch, q, k, v, case) -> Finding | None:
    """extra_checks for assert_cases: fail a tensor as large as the score matrix (watch.largest_numel)."""
    bound = score_matrix_limit(tuple(q.shape), tuple(k.shape), tuple(v.shape))
    if bound is None:
        return None
    limit, what = bound
    if watch.largest_numel >= limit:
        b, h, lq, _ = q.shape
        return Finding("materialised_scores",
                       f"materialised the score matrix: it built a tensor of {watch.largest_numel:,} elements, "
                       f"at least as large as {what} ({limit:,}). Tiled attention holds one block of scores "
                       f"at a time (B*H*Lq*block_n = {b * h * lq:,} * block_n), never every key's score at once")
    return None


ATTENTION_BLOCK_SIZES = (64, 32, 128, 16)  # the block a solution is likely to use, most likely first
ATTENTION_FAULTS = {
    "no_acc_rescale": "acc is not rescaled when the running max grows: it was summed under the old max, "
                      "and needs the same factor as l before the block's contribution is added",
    "no_l_rescale": "the running sum l is not rescaled when the running max grows: multiply l by alpha "
                    "before adding the block's row sums",
    "no_normalise": "the output is not divided by the running sum l: the weights of a row do not sum to 1",
}


def _dropped_tail(q, k, v, block_n):
    """Attention that only ever sees the keys of the full blocks (the partial last block skipped)."""
    n_full = (k.shape[2] // block_n) * block_n
    if n_full == 0:  # no block at all: acc / l = 0 / 0
        return torch.full((*q.shape[:-1], v.shape[-1]), math.nan, dtype=torch.float64)
    return attention_reference(q, k[:, :, :n_full], v[:, :, :n_full])[0]


def diagnose_tiled_attention(o64, q, k, v, ref_o, case) -> list[Finding]:
    """diagnoses for assert_cases: re-enact each typical mistake in float64 and match it."""
    tol = TOLERANCES[q.dtype]
    o = o64.detach().double().cpu()
    q, k, v = (t.detach().cpu() for t in (q, k, v))
    ref = ref_o.detach().double().cpu()
    scores_max = ((q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])).amax(dim=-1)
    bad_rows = (~torch.isfinite(o)).any(dim=-1)
    overflow = _overflow_finding(bad_rows, scores_max, q.dtype)
    if overflow:
        return [overflow]
    lk = k.shape[2]
    for block_n in ATTENTION_BLOCK_SIZES:
        if lk % block_n and _matches(o, _dropped_tail(q, k, v, block_n), ref, tol):
            n_full = (lk // block_n) * block_n
            seen = (f"attention over keys 0..{n_full - 1} only" if n_full else
                    f"no key at all: with Lk={lk} < block_n there is no full block, and acc / l is 0 / 0")
            return [Finding("dropped_tail", f"the keys past the last full block are ignored (the output matches "
                                            f"{seen}, with {block_n}-key blocks): when Lk is not a multiple of "
                                            f"block_n the loop must also visit the shorter last block")]
    for block_n in ATTENTION_BLOCK_SIZES:
        if lk <= block_n:
            continue  # a single block never rescales; no_normalise is tried below on its own
        for fault, message in ATTENTION_FAULTS.items():
            sim, _ = blockwise_attention(q, k, v, block_n, frozenset({fault}))
            if _matches(o, sim, ref, tol):
                return [Finding(fault, f"{message} (the output matches that mistake exactly, "
                                       f"with {block_n}-key blocks)")]
    sim, _ = blockwise_attention(q, k, v, max(lk, 1), frozenset({"no_normalise"}))
    if _matches(o, sim, ref, tol):
        return [Finding("no_normalise", ATTENTION_FAULTS["no_normalise"])]
    return []


# This problem's mistakes first, then the online-softmax mistakes in the combinations it does not try.
ATTENTION_DIAGNOSES = (diagnose_tiled_attention, diagnose_online_softmax)


def torch_runtime():
    """The course runtime, allowing float32 inputs: these checks run PyTorch code, not tl.dot,
    so no dtype needs to be swapped for the interpreter."""
    from .. import device as device_mod

    rt = device_mod.current()
    dtypes = (torch.float32, torch.float16) + ((torch.bfloat16,) if torch.bfloat16 in rt.dtypes else ())
    return device_mod.Runtime(rt.device, rt.interpreter, dtypes, rt.reason)


def check_tiled_attention(fn, cases, title: str = "", **kwargs) -> None:
    """assert_cases for a PyTorch attention: no Triton required, no builtin attention, no score matrix."""
    kwargs.setdefault("runtime", torch_runtime())
    assert_cases(fn, cases, title=title, require_triton=False, extra_checks=(no_score_matrix,),
                 diagnoses=ATTENTION_DIAGNOSES, **kwargs)


# ---------------------------------------------------------------------------------------------
# Self-check, figure, benchmark
# ---------------------------------------------------------------------------------------------

# The visible online_softmax cases (the spec holds tiled_attention's).
SELF_CHECK_SOFTMAX = [SoftmaxCase(4, 256, 64, "float64"), SoftmaxCase(8, 200, 64, "float32", seed=1),
                      SoftmaxCase(3, 100, 7, "float32", seed=2)]


@SELF_CHECK
def check(online_softmax=None, tiled_attention=None):
    """Self-check with the visible cases of whichever functions are given."""
    if online_softmax is not None:
        check_online_softmax(online_softmax, SELF_CHECK_SOFTMAX, title="Problem 2 self-check: online_softmax")
    if tiled_attention is not None:
        check_tiled_attention(tiled_attention, SPEC.self_check_cases, title="Problem 2 self-check: tiled_attention")


@FIGURE
def plot_overflow_and_memory(seq_lens=(1024, 4096, 16384, 65536), block_n=64, heads=16, ax=None):
    """Two reasons for this chapter, side by side.

    Left: exp(x) in float32 runs out of range at x = log(3.4e38) = 88.7, so a softmax that
    does not subtract the max returns inf / inf = NaN for large logits. Right: the memory
    that one layer's scores take (B=1, float32), the whole L x L matrix against one L x block_n
    block, as the sequence grows.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    left, right = ax
    limit = math.log(torch.finfo(torch.float32).max)
    xs = torch.linspace(0, 100, 401)
    ys = torch.exp(xs.float())
    left.semilogy(xs[torch.isfinite(ys)], ys[torch.isfinite(ys)], label="exp(x) in float32")
    left.axvline(limit, color="#d62728", ls="--", label=f"overflow: x > {limit:.1f}")
    left.axvspan(limit, 100, color="#d62728", alpha=0.08)
    left.text(limit - 2, 1e5, "beyond the line:\nexp(x) = inf,\nsoftmax = inf/inf = NaN", color="#d62728",
              fontsize=8, ha="right")
    left.set_xlabel("logit x")
    left.set_ylabel("exp(x)")
    left.set_title("A naive exp overflows")
    left.legend(fontsize=8, loc="upper left")
    ls = torch.tensor(seq_lens, dtype=torch.float64)
    full = heads * ls * ls * 4 / 2 ** 30
    block = heads * ls * block_n * 4 / 2 ** 30
    right.loglog(ls, full, "o-", label="whole score matrix (H x L x L)")
    right.loglog(ls, block, "s-", label=f"one block of scores (H x L x {block_n})")
    right.axhline(80, color="#999", ls=":", label="80 GB: a whole H100")
    right.set_xlabel("sequence length L")
    right.set_ylabel("GiB (float32, one layer, B=1)")
    right.set_title(f"Memory for the scores, H={heads}")
    right.legend(fontsize=8)
    plt.tight_layout()
    return ax


def benchmark(fn, lengths=(1024, 2048, 4096), head_dim=64, batch=4, heads=16, plot_path=None):
    """Time tiled_attention (a Python loop over key blocks) against naive PyTorch and SDPA.

    Under the CPU interpreter, or while grading, it only explains why it does nothing.
    """
    import os

    from .. import benchmark as bench

    if os.environ.get("COURSE_GRADING") == "1":
        print(bench.GRADING_SKIP)
        return None
    if not torch.cuda.is_available():
        print("No GPU here: the comparison this cell makes (a Python loop of small GPU operations against "
              "fused attention kernels) only means something on a GPU. On the CPU every version is bound by "
              "the same arithmetic, and the lesson of the loop's launch overhead does not show.")
        return None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    impls = {"tiled_attention (yours)": lambda q, k, v: fn(q, k, v)[0], **bench.peers()}
    rows = bench.run_benchmark(impls, [(batch, heads, n, head_dim) for n in lengths], dtype=dtype)
    print(bench.format_table(rows))
    print(bench.speedup_table(rows, "tiled_attention (yours)"))
    launches = 10 * max(lengths) // 64
    print(f"\nEach key block costs your loop about ten small GPU operations (a matmul, a max, exps, sums, "
          f"a second matmul), each a separate kernel launch that reads and writes its operands in GPU memory: "
          f"about {launches} launches for L={max(lengths)}. Its memory stays small, but it moves every block "
          f"of scores through HBM several times. Problem 3 moves this loop into one Triton kernel, where the "
          f"block of scores never leaves the chip.")
    bench.plot(rows, plot_path, title=f"B={batch} H={heads} D={head_dim} {str(dtype)[6:]} on "
                                      f"{torch.cuda.get_device_name(0)}")
    return rows
