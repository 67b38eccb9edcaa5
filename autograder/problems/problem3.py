"""Problem 3: non-causal FlashAttention-2 forward in Triton.

The graded cells call `assert_forward_cases`: the generic checks, with the online-softmax
mistakes (online_softmax_faults) re-enacted for a likely cause.
"""
from __future__ import annotations

from .. import performance
from ..checks import assert_cases
from ..feedback_run import SELF_CHECK
from ..inputs import Case
from ..performance import TimingPlan
from . import reference_function
from .online_softmax_faults import diagnose_kernel_lse, diagnose_kernel_online_softmax
from .spec import ProblemSpec

# The hint ladder (autograder.hints.hint("problem3")): two nudges, then the idea, never the code.
_HINTS = (
    "Start from the recurrence in section 2 with base-2 exponentials: qk * qk_scale carries "
    "log2(e)/sqrt(D), so exp2(qk * qk_scale - m) is exactly e^(score - max). Do the tail mask first: in the "
    "last block, keys with key_idx >= seq_len_k must score -inf before you take any maximum.",
    "Per block: the new max is the larger of m_i and the block's row max; alpha = exp2(m_i - m_new) "
    "shrinks everything accumulated under the old max. Both l_i and acc need that factor before "
    "this block's contribution is added, and p must be cast to v's dtype for tl.dot.",
    "The update, in words: mask the tail; the new running max is the larger of the old one and this block's "
    "scaled row max; alpha re-bases the old sum and the old accumulator onto the new max; this block's "
    "probabilities (relative to the new max) add their row sums to l and their product with V to acc. "
    "Finalize divides acc by l, and the natural-log LSE is the max plus the base-2 log of l, times ln 2.",
)

SPEC = ProblemSpec(
    assignment="problem3",
    notebook="problem3.ipynb",
    # Cells that together make the kernel module: imports, the student's cell, the kernel + wrapper.
    kernel_cells=("imports", "online_softmax", "kernel"),
    student_cell="online_softmax",
    kernel_function="flash_attention_forward",
    answer_policy="triton",
    hints=_HINTS,
    # What a self-learner can run at any time (the same shapes as the visible graded cells).
    self_check_cases=(Case(1, 2, 128, 64), Case(2, 2, 256, 32, seed=1), Case(1, 2, 200, 64, seed=2)),
    # Performance points (autograder.performance): the kernel's time over the reference kernel's.
    performance_points=2,
    timing=TimingPlan(gpu_case=Case(4, 16, 4096, 64), cpu_case=Case(1, 2, 256, 64)),
)

# The online-softmax mistakes (a tail left unmasked or masked off by one, a rescale or the final
# division forgotten or misplaced, the max never updated, the scale missing or doubled, the row sums
# of the scores), each re-enacted in float64 and named when the output matches it exactly.
DIAGNOSES = (diagnose_kernel_online_softmax,)
LSE_DIAGNOSES = (diagnose_kernel_lse,)


def assert_forward_cases(fn, cases, title="", **kwargs):
    """assert_cases with this problem's mistakes re-enacted for a likely cause."""
    assert_cases(fn, cases, title=title, diagnoses=DIAGNOSES, lse_diagnoses=LSE_DIAGNOSES, **kwargs)


@SELF_CHECK
def check(fn):
    """Self-check with the visible shapes; raises CheckFailed with a likely cause when wrong."""
    assert_forward_cases(fn, SPEC.self_check_cases, title="Problem 3 self-check (output and log-sum-exp):")


assert SPEC.timing is not None  # the performance cell times against this plan
performance_points = performance.points_function(SPEC.assignment, SPEC.timing, SPEC.performance_points,
                                                gate=check, reference=reference_function)


def benchmark(fn, lengths=(1024, 2048, 4096), head_dim=64, batch=4, heads=16, plot_path=None):
    """Time `fn` against naive PyTorch and SDPA (flash and cuDNN backends) and plot it.

    Under the CPU interpreter this only explains why there is nothing meaningful to time.
    """
    import torch

    from .. import benchmark as bench

    reason = bench.kernel_skip_reason("compare your kernel with PyTorch")
    if reason:
        print(reason)
        return None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    impls = {"your kernel": lambda q, k, v: fn(q, k, v)[0], **bench.peers()}
    reference = reference_function(SPEC.assignment)
    if reference is not None:  # the course's own kernel, where its sources are at hand
        impls["reference kernel"] = lambda q, k, v: reference(q, k, v)[0]
    rows = bench.run_benchmark(impls, [(batch, heads, n, head_dim) for n in lengths], dtype=dtype)
    print(bench.format_table(rows))
    print(bench.speedup_table(rows, "your kernel"))
    bench.plot(rows, plot_path, title=f"B={batch} H={heads} D={head_dim} {str(dtype)[6:]} on "
                                      f"{torch.cuda.get_device_name(0)}")
    return rows
