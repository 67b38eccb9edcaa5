"""Problem 4: causal FlashAttention in Triton (mask the diagonal, skip the blocks above it).

Beyond the generic checks this module holds what only a causal kernel needs:
- `causal_diagnoses(fn)`: re-enacts the typical causal mistakes in float64 (a mask shifted by one,
  no mask, the diagonal block visited twice, key ranges one query block off) for the kernel's own
  block sizes, and names the one that matches the output exactly;
- `assert_block_visits(fn, cases)`: asks the kernel how many key blocks each program processed and
  compares that with the minimum the causal mask allows (`block_visits.minimal_visits`), so a
  kernel that masks everything but skips nothing does not get the block-skipping points;
- `benchmark(fn)`: the kernel against SDPA causal (FLASH_ATTENTION and CUDNN_ATTENTION pinned)
  and against problem 3's non-causal reference, on a GPU.
"""
from __future__ import annotations

import math

import torch

from .. import performance
from ..block_visits import minimal_visits
from ..checks import TOLERANCES, assert_cases, conclude, run_case, stderr_to_stdout
from ..diagnose import Finding, describe_exception
from ..feedback_run import FIGURE, SELF_CHECK
from ..inputs import Case
from ..performance import TimingPlan
from ..verdict import report
from . import reference_function
from .spec import ProblemSpec

# The hint ladder (autograder.hints.hint("problem4")): two nudges, then the idea, never the code.
_HINTS = (
    "Draw the tiles of one query block on paper: its rows are start_m*BLOCK_M ... "
    "start_m*BLOCK_M + BLOCK_M - 1. Which key blocks lie wholly to the left of its first row (every "
    "query sees every key: stage 1), which ones cross the diagonal (stage 2), and which ones lie wholly "
    "to the right of its last row (no query sees anything: never load them)? Do not forget that the "
    "last query block can end before BLOCK_M rows.",
    "Stage 1 must stop exactly where the query block starts, or the diagonal is visited twice (and once "
    "without a mask). In stage 2 the mask compares each query's position with each key's position; a "
    "query attends to itself. The update is problem 3's, with the tail-of-sequence test replaced by the "
    "causal test: think about why, for every row that is stored, the causal test already hides the keys "
    "past the end.",
    "causal_key_range: stage 1 covers the keys before the block's first query; stage 2 the block's own "
    "positions, never past the sequence. online_softmax_update: on the diagonal, hide every key that comes "
    "after its query, then run problem 3's recurrence unchanged. finalize: as in problem 3.",
)

SPEC = ProblemSpec(
    assignment="problem4",
    notebook="problem4.ipynb",
    # Cells that together make the kernel module: imports, the student's cell, the kernel + wrapper.
    kernel_cells=("imports", "causal", "kernel"),
    student_cell="causal",
    kernel_function="flash_attention_causal",
    answer_policy="triton",
    hints=_HINTS,
    # What a self-learner can run at any time (the same shapes as the visible graded cells).
    self_check_cases=(Case(1, 2, 128, 64, causal=True), Case(2, 2, 256, 32, seed=1, causal=True),
                      Case(1, 2, 200, 64, seed=2, causal=True)),
    # Performance points (autograder.performance): the kernel's time over the reference kernel's.
    performance_points=2,
    timing=TimingPlan(gpu_case=Case(4, 16, 4096, 64, causal=True), cpu_case=Case(1, 2, 384, 64, causal=True)),
)

SELF_CHECK_VISITS = [Case(1, 2, 300, 32, seed=3, causal=True)]

# Block sizes to try when a function does not say which it uses (most likely first).
_FALLBACK_BLOCKS = ((128, 64), (64, 64), (128, 128), (64, 32), (32, 32))


def block_sizes(fn, q):
    """(BLOCK_M, BLOCK_N) the kernel behind `fn` uses for input `q` (its head dim and GPU), from its
    launch config."""
    config = getattr(fn, "launch_config", None)
    if config is None:
        return None
    block_m, block_n = config(q)[:2]
    return int(block_m), int(block_n)


# ---------------------------------------------------------------------------------------------
# Re-enacting the kernel's two stages in float64.
#
# The locked kernel walks stage 1 (no mask) over range(lo1, hi1, BLOCK_N) and stage 2 (mask) over
# range(lo2, hi2, BLOCK_N), after clamping lo1, lo2 >= 0 and hi1 <= L - BLOCK_N + 1 so that no
# unmasked load leaves the sequence. Keys past L in stage 2 are loaded as zeros (score 0, value 0).
# Since every visit adds exp(s - m) terms to the same sums, the kernel's output is a softmax with a
# multiplicity per (query, key): how many times that key was counted for that query. A row becomes
# NaN when its first visited block has no visible key (m stays -inf, and exp2(-inf - -inf) is NaN).
# ---------------------------------------------------------------------------------------------

def _ranges_correct(m, bm, bn, n):
    return 0, m * bm, m * bm, min((m + 1) * bm, n)


# The stage ranges and diagonal masks the re-enactment knows, by name: the rules themselves live in
# visit_weights (whose code the student edition does not ship: next to the mistakes stands the answer).
RANGE_VARIANTS = ("correct", "all_keys", "diagonal_twice", "block_behind", "block_ahead", "block_n_units",
                  "stage1_from_key_1")
MASK_VARIANTS = ("causal", "strict", "one_ahead", "none", "reversed", "inverted")

RANGE_FINDINGS = {
    "all_keys": ("blocks_not_skipped", "every key block goes through stage 2, including the blocks above the "
                 "diagonal"),
    "diagonal_twice": ("diagonal_twice", "the diagonal block is visited twice: stage 1 runs on to the end of "
                       "the query block (without the mask) and stage 2 visits the diagonal again; stage 1 must "
                       "stop where the query block's diagonal begins"),
    "block_behind": ("query_block_offset", "the key ranges are one query block behind: stage 2 walks the keys "
                     "before the block instead of its diagonal, so the diagonal keys are never visited; find the "
                     "key index of the block's first query"),
    "block_ahead": ("query_block_offset", "the key ranges are one query block ahead: stage 1 runs over the "
                    "diagonal without the mask, and stage 2 over keys no query of the block may see; stage 1 "
                    "ends at the key index of the block's first query"),
    "block_n_units": ("block_units", "the key ranges count in BLOCK_N where the position of the query block "
                      "needs BLOCK_M: query block start_m holds the queries from start_m query blocks in, and "
                      "its diagonal spans as many keys as the block has queries"),
    "stage1_from_key_1": ("stage1_start", "stage 1 starts at key 1, not key 0: its blocks are shifted by one key, "
                          "so key 0 is never visited and the diagonal's first key is counted twice (once unmasked in "
                          "stage 1); every query sees the keys from the first one on"),
}
MASK_FINDINGS = {
    "strict": ("diagonal_offset", "the diagonal mask is off by one: it hides key j = i, but a query attends "
               "to itself; row 0 is left with no key at all and becomes NaN"),
    "one_ahead": ("diagonal_offset", "the diagonal mask is off by one: it lets query i see key i + 1, one "
                  "step into the future"),
    "none": ("no_causal_mask", "the diagonal blocks are not masked: inside its own block a query sees the "
             "keys after it (and, in the last block, zero-padded keys past the end)"),
    "reversed": ("mask_reversed", "the diagonal mask is reversed: it keeps the keys after the query "
                 "and hides the ones before it"),
    "inverted": ("mask_inverted", "the diagonal mask is inverted (tl.where's two values swapped): it hides "
                 "the keys a query may see in its own block and keeps the ones after it"),
}


def visit_weights(seq_len, block_m, block_n, ranges="correct", mask="causal"):
    """Multiplicity of each (query i, key j) in a kernel with these stage ranges and this diagonal
    mask, as an (L, width) float64 tensor (columns past L are zero-padded keys), and a boolean (L,)
    that is False for rows whose first visited block shows them no key (NaN in the kernel)."""
    range_fn = {
        "correct": _ranges_correct,
        "all_keys": lambda m, bm, bn, n: (0, 0, 0, n),
        "diagonal_twice": lambda m, bm, bn, n: (0, (m + 1) * bm, m * bm, min((m + 1) * bm, n)),
        "block_behind": lambda m, bm, bn, n: (0, (m - 1) * bm, (m - 1) * bm, min(m * bm, n)),
        "block_ahead": lambda m, bm, bn, n: (0, (m + 1) * bm, (m + 1) * bm, min((m + 2) * bm, n)),
        "block_n_units": lambda m, bm, bn, n: (0, m * bn, m * bn, min((m + 1) * bn, n)),
        "stage1_from_key_1": lambda m, bm, bn, n: (1, m * bm, m * bm, min((m + 1) * bm, n)),
    }[ranges]
    mask_fn = {  # which keys j the diagonal mask keeps for query i
        "causal": lambda i, j: j <= i,
        "strict": lambda i, j: j < i,
        "one_ahead": lambda i, j: j <= i + 1,
        "none": lambda i, j: torch.ones_like(j <= i),
        "reversed": lambda i, j: j >= i,
        "inverted": lambda i, j: j > i,
    }[mask]
    n_q = -(-seq_len // block_m)
    width = (n_q + 2) * block_m
    counts = torch.zeros(seq_len, width, dtype=torch.float64)
    first_ok = torch.ones(seq_len, dtype=torch.bool)
    for m in range(n_q):
        lo1, hi1, lo2, hi2 = range_fn(m, block_m, block_n, seq_len)
        lo1, hi1, lo2 = max(lo1, 0), min(hi1, seq_len - block_n + 1), max(lo2, 0)
        r0, r1 = m * block_m, min((m + 1) * block_m, seq_len)
        i = torch.arange(r0, r1)[:, None]
        blocks = [(s, None) for s in range(lo1, hi1, block_n)] + [(s, True) for s in range(lo2, hi2, block_n)]
        for index, (start, masked) in enumerate(blocks):
            j = torch.arange(start, start + block_n)[None, :]
            seen = mask_fn(i, j) if masked else torch.ones(r1 - r0, block_n, dtype=torch.bool)
            counts[r0:r1, start:start + block_n] += seen.double()
            if index == 0:
                first_ok[r0:r1] = seen.any(1)
        if not blocks:
            first_ok[r0:r1] = False
    return counts, first_ok


def reenact(q, k, v, block_m, block_n, ranges="correct", mask="causal"):
    """The output (float64, (B, H, L, D)) of a causal kernel with the given stage ranges and mask."""
    seq_len = q.shape[2]
    counts, first_ok = visit_weights(seq_len, block_m, block_n, ranges, mask)
    counts, first_ok = counts.to(q.device), first_ok.to(q.device)
    width = counts.shape[1]
    kp = torch.nn.functional.pad(k.double(), (0, 0, 0, width - seq_len))
    vp = torch.nn.functional.pad(v.double(), (0, 0, 0, width - seq_len))
    s = (q.double() @ kp.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(counts == 0, float("-inf"))
    w = counts * torch.exp(s - s.amax(-1, keepdim=True))   # NaN where a row sees nothing
    out = (w @ vp) / w.sum(-1, keepdim=True)
    return out.masked_fill(~first_ok[:, None], float("nan"))


def _same(o, sim, atol, rtol):
    """Element-wise close, with NaN/inf exactly where the re-enactment has them."""
    bad_o, bad_sim = ~torch.isfinite(o), ~torch.isfinite(sim)
    if not torch.equal(bad_o, bad_sim):
        return False
    return bool(torch.isclose(o[~bad_o], sim[~bad_sim], atol=atol, rtol=rtol).all())


# Largest B*H*L*width the re-enactment is tried on (float64 scores): beyond that, generic diagnosis.
_REENACT_LIMIT = 2 ** 27


def causal_diagnoses(fn):
    """`diagnoses=` for assert_cases: the causal mistakes re-enacted for `fn`'s block sizes."""

    def diagnose(o64, q, k, v, ref_o, case):
        if not case.causal or case.window is not None or case.sink is not None:
            return []
        tol = TOLERANCES[q.dtype]
        b, h, n, d = q.shape
        known = block_sizes(fn, q)
        sizes = (known,) if known else _FALLBACK_BLOCKS
        o = o64.to(q.device)
        if b * h * n * (n + 3 * max(bm for bm, _ in sizes)) > _REENACT_LIMIT:
            return []
        full, _ = _noncausal(q, k, v)
        if _same(o, full, tol.atol, tol.rtol):
            return [Finding("no_causal_mask", "the output is plain non-causal attention: no key after its query "
                                              "is hidden (stage 2 needs the causal mask, and the blocks above "
                                              "the diagonal must not be visited)")]
        for block_m, block_n in sizes:
            for ranges in RANGE_VARIANTS:
                for mask in MASK_VARIANTS:
                    if (ranges, mask) in (("correct", "causal"), ("all_keys", "causal")):
                        continue  # these compute the right answer
                    if ranges == "block_n_units" and block_m == block_n:
                        continue  # with square tiles it is the correct range
                    if ranges == "stage1_from_key_1" and mask != "causal":
                        continue  # an off-by-one start, re-enacted with the right mask only
                    sim = reenact(q, k, v, block_m, block_n, ranges, mask)
                    if _same(o, sim, tol.atol, tol.rtol):
                        found = [RANGE_FINDINGS[ranges]] if ranges in RANGE_FINDINGS else []
                        found += [MASK_FINDINGS[mask]] if mask in MASK_FINDINGS else []
                        where = f" (the output matches that mistake exactly, with {block_m}x{block_n} tiles)"
                        return [Finding(code, msg + where) for code, msg in found]
        return []

    return [diagnose]


def _noncausal(q, k, v):
    from ..references import attention_reference

    return attention_reference(q, k, v)


# ---------------------------------------------------------------------------------------------
# Block skipping: how many key blocks each program processed.
# ---------------------------------------------------------------------------------------------

def visits_finding(counts, seq_len, block_m, block_n):
    """None when `counts` ((B*H, query blocks) ints) is the causal minimum, else a Finding."""
    need = torch.tensor(minimal_visits(seq_len, block_m, block_n, causal=True), dtype=torch.int64)
    full = torch.tensor(minimal_visits(seq_len, block_m, block_n, causal=False), dtype=torch.int64)
    counts = counts.to(torch.int64).cpu()
    if torch.equal(counts, need.expand_as(counts)):
        return None
    got_total, need_total, full_total = int(counts[0].sum()), int(need.sum()), int(full.sum())
    row = int((counts != need).any(1).nonzero()[0])   # the first (batch*head) whose counts are off
    per_block = counts[row]
    block = int((per_block != need).nonzero()[0])
    detail = (f"query block {block} visits {int(per_block[block])} key blocks, it needs "
              f"{int(need[block])}; a non-causal kernel visits {full_total} in all")
    head = f"the kernel visits {int(per_block.sum())} key blocks, a causal kernel needs {need_total}"
    if bool((counts >= full).all()) and need_total < full_total:
        return Finding("blocks_not_skipped", f"{head}: the blocks above the diagonal are not skipped ({detail})")
    if bool((counts > need).any()):
        return Finding("extra_block_visits", f"{head}: some key blocks are visited twice or lie above the "
                                             f"diagonal ({detail})")
    if got_total == 0:
        return Finding("missing_block_visits", f"{head}: no key block was processed at all")
    return Finding("missing_block_visits", f"{head}: keys that some query may see are never visited ({detail})")


def block_visit_check(fn, record=None):
    """An `extra_checks` entry: call `fn` once more with a `_visits` counter and compare the counts
    with the causal minimum for its block sizes. `record` (a dict) receives the counts."""

    def check(watch, q, k, v, case):
        b, h, n, d = q.shape
        sizes = block_sizes(fn, q)
        if sizes is None:
            return Finding("no_launch_config", "the function does not expose its launch config "
                                               "(flash_attention_causal.launch_config): grade the course's "
                                               "wrapper, not a replacement")
        block_m, block_n = sizes
        n_q = -(-n // block_m)
        counter = torch.zeros(b * h * n_q, dtype=torch.int32, device=q.device)
        try:
            fn(q, k, v, _visits=counter)
            if q.device.type == "cuda":
                torch.cuda.synchronize()
        except Exception as exc:  # the plain call worked; say plainly why the counting one did not
            return describe_exception(exc)
        counts = counter.view(b * h, n_q)
        if record is not None:
            record.update(counts=counts.cpu(), block_m=block_m, block_n=block_n,
                          need=sum(minimal_visits(n, block_m, block_n, causal=True)),
                          full=sum(minimal_visits(n, block_m, block_n, causal=False)))
        return visits_finding(counts, n, block_m, block_n)

    return check


def run_block_visits(fn, cases, title=""):
    """Run the block-skipping check on each case, printing one line per case; returns the results."""
    results = []
    with stderr_to_stdout():
        if title:
            print(title)
        for index, case in enumerate(cases):
            record: dict = {}
            result = run_case(fn, case, check_output=False, check_lse=False, fresh_call=(index == 0),
                              extra_checks=[block_visit_check(fn, record)])
            if result.passed:
                result.summary = (f"{record['need']} key-block visits per head, the causal minimum with "
                                  f"{record['block_m']}x{record['block_n']} tiles (non-causal: {record['full']})")
            results.append(report(result))
    return results


def assert_block_visits(fn, cases, title=""):
    """Like assert_cases, for the number of key blocks each program visits: CheckFailed if off."""
    conclude(run_block_visits(fn, cases, title))


@SELF_CHECK
def check(fn):
    """Self-check with the visible shapes; raises CheckFailed with a likely cause when wrong."""
    assert_cases(fn, SPEC.self_check_cases, title="Problem 4 self-check (output and log-sum-exp):",
                 diagnoses=causal_diagnoses(fn))
    assert_block_visits(fn, SELF_CHECK_VISITS, title="Problem 4 self-check (blocks above the diagonal skipped):")


assert SPEC.timing is not None  # the performance cell times against this plan
performance_points = performance.points_function(SPEC.assignment, SPEC.timing, SPEC.performance_points,
                                                gate=check, reference=reference_function)


# ---------------------------------------------------------------------------------------------
# Pictures and timing.
# ---------------------------------------------------------------------------------------------

@FIGURE
def plot_stages(seq_len=512, block_m=128, block_n=64, axes=None):
    """Side by side: every tile a non-causal kernel visits, and the causal kernel's two stages
    (drawn on the grader's own mask, `plots.plot_mask`): 1 = stage 1, no mask; 2 = stage 2, masked."""
    import matplotlib.pyplot as plt

    from ..plots import plot_mask

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    plot_mask(seq_len, causal=False, block_m=block_m, block_n=block_n, ax=axes[0])
    plot_mask(seq_len, causal=True, block_m=block_m, block_n=block_n, ax=axes[1])
    for m in range(-(-seq_len // block_m)):
        lo1, hi1, lo2, hi2 = _ranges_correct(m, block_m, block_n, seq_len)
        y = m * block_m + min(block_m, seq_len - m * block_m) / 2
        for stage, (lo, hi) in ((1, (lo1, hi1)), (2, (lo2, hi2))):
            for start in range(lo, hi, block_n):
                axes[1].text(start + min(block_n, seq_len - start) / 2, y, str(stage), ha="center", va="center",
                             fontsize=11, fontweight="bold", color="#08306b" if stage == 1 else "#a50f15")
    axes[1].set_title(axes[1].get_title() + "\n1 = stage 1 (no mask), 2 = stage 2 (causal mask)", fontsize=10)
    return axes


def _sdpa(backend_name, causal=True):
    """SDPA with one backend pinned (so the name in the table is the kernel that ran)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def run(q, k, v):
        with sdpa_kernel(backend):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return run


def benchmark(fn, lengths=(1024, 2048, 4096, 8192, 16384), head_dim=64, batch=4, heads=16, plot_path=None):
    """Time `fn` against SDPA causal (FLASH_ATTENTION and CUDNN_ATTENTION pinned) and against a
    non-causal kernel doing the full L x L work, on a GPU; print the table and the ratios.

    Causal TFLOPS count the useful half of the work: 2*B*H*L^2*D. Under the CPU interpreter or
    while grading this only says why it does nothing.
    """
    from .. import benchmark as bench

    reason = bench.kernel_skip_reason("compare your kernel with PyTorch")
    if reason:
        print(reason)
        return None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    noncausal = reference_function("problem3")  # problem 3's kernel, where the sources are at hand
    noncausal_name = "problem 3 reference (non-causal)"
    if noncausal is None:  # a student's machine: the course's solutions are not there
        sdpa_full = _sdpa("FLASH_ATTENTION", causal=False)
        noncausal, noncausal_name = (lambda q, k, v: (sdpa_full(q, k, v), None)), "SDPA FLASH (non-causal)"
    impls = {
        "your kernel": (lambda q, k, v: fn(q, k, v)[0], True),
        "SDPA FLASH causal": (_sdpa("FLASH_ATTENTION"), True),
        "SDPA CUDNN causal": (_sdpa("CUDNN_ATTENTION"), True),
        noncausal_name: ((lambda q, k, v: noncausal(q, k, v)[0]), False),
    }
    reference = reference_function(SPEC.assignment)
    if reference is not None:  # the course's own causal kernel, where its sources are at hand
        impls["reference kernel"] = (lambda q, k, v: reference(q, k, v)[0], True)
    rows = []
    for n in lengths:
        torch.manual_seed(0)
        q, k, v = (torch.randn(batch, heads, n, head_dim, device="cuda", dtype=dtype) for _ in range(3))
        for name, (impl, causal) in impls.items():
            row = {"impl": name, "B": batch, "H": heads, "L": n, "D": head_dim, "dtype": str(dtype)[6:]}
            try:
                m = bench.measure(impl, q, k, v)
                flops = bench.attention_flops(batch, heads, n, n, head_dim, causal=causal)
                rows.append({**row, **m, "tflops": flops / (m["ms"] * 1e-3) / 1e12})
            except Exception as exc:  # an unsupported backend is a result, not a crash
                rows.append({**row, "skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"})
        del q, k, v
        torch.cuda.empty_cache()
    print(bench.format_table(rows))
    print("(TFLOPS of the causal rows count the visible half of the scores, 2*B*H*L^2*D; the non-causal "
          "row counts all of them.)")
    for n in lengths:
        at = {r["impl"]: r for r in rows if r["L"] == n and "skipped" not in r}
        if "your kernel" not in at:
            continue
        mine = at["your kernel"]
        parts = [f"{mine['tflops'] / at[p]['tflops']:.2f}x {p}" for p in ("SDPA FLASH causal", "SDPA CUDNN causal")
                 if p in at]
        if noncausal_name in at:
            parts.append(f"{at[noncausal_name]['ms'] / mine['ms']:.2f}x shorter than {noncausal_name} (ideal: 2x)")
        print(f"L={n}: {mine['tflops']:.0f} TFLOPS = " + ", ".join(parts))
    bench.plot(rows, plot_path, title=f"causal, B={batch} H={heads} D={head_dim} {str(dtype)[6:]} on "
                                      f"{torch.cuda.get_device_name(0)}")
    return rows
