# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "colab_badge", "locked": true, "schema_version": 3, "solution": false, "task": false}
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/flash-attention-course/flash-attention-course/blob/main/notebooks/problem4/problem4.ipynb)
#
# Runs in Colab (GPU or CPU), on a laptop without a GPU, or on a GPU machine: [how to start, and what each can do](https://github.com/flash-attention-course/flash-attention-course/blob/main/README.md#start).

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Problem 4 · Causal FlashAttention in Triton
#
# A language model predicts token $i$ from tokens $0, \dots, i$ only: query $i$ may attend to key $j$
# only if $j \le i$. That is the **causal mask**, and it hides half of the score matrix. A kernel that
# computes the whole matrix and then throws half of it away does twice the work it needs. In this
# chapter you turn problem 3's kernel into a causal one that does only the work the mask leaves:
# it masks the few tiles that cross the diagonal and never even loads the tiles above it.
#
# **You will learn** how a mask decides, tile by tile, what a kernel may skip; why the fastest causal
# kernels split their loop into an unmasked stage and a masked one; and how to check a kernel's work
# count, not only its numbers.
#
# **How this notebook works.** Run the cells from the top. The first code cell installs the course
# when it is missing (in Colab) and picks the GPU, or Triton's CPU interpreter when there is no GPU
# that Triton supports. You edit one cell, marked *Your code*: it holds the key ranges of the two
# stages, the masked online-softmax update (start from your problem 3 update) and the final
# normalisation. The self-check right after it tells you what is wrong and why, a hint cell reveals
# one step at a time when you are stuck, and the check cells of section 4 are the ones that earn
# points; the grader runs more checks of the same kind on shapes you do not see, and it counts the key
# blocks your kernel visits.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Setup: run this first. It must run before any Triton kernel is defined, because Triton
# decides at definition time whether a kernel is compiled for the GPU or interpreted.
import importlib
import importlib.util
import subprocess
import sys

# Where pip finds the course: the student edition of the course.
COURSE_PIP_SPEC = "git+https://github.com/flash-attention-course/flash-attention-course.git@main"

if importlib.util.find_spec("autograder") is None:  # Colab, or a fresh environment
    # The course package alone (--no-deps): Colab already has torch, triton and matplotlib, and
    # pip must not replace its CUDA build of torch. Then only what this machine lacks, if anything.
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--no-deps", COURSE_PIP_SPEC], check=True)
    needed = ("torch", "triton", "numpy", "matplotlib", "nbformat", "tqdm")
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        subprocess.run([*pip, *missing], check=True)
    importlib.invalidate_caches()

from autograder.device import configure

runtime = configure()  # the GPU if Triton supports it, else TRITON_INTERPRET=1 with float16 and small shapes

# %% [markdown]
# ## 1. Half of the scores are hidden
#
# With the causal mask, row $i$ of the attention is a softmax over the keys $j \le i$ only:
#
# $$
# O_i = \sum_{j \le i} \frac{e^{s_{ij}}}{\sum_{j' \le i} e^{s_{ij'}}}\, v_j, \qquad s_{ij} = \frac{q_i \cdot k_j}{\sqrt{D}},
# \qquad \mathrm{LSE}_i = \log \sum_{j \le i} e^{s_{ij}} .
# $$
#
# Row $i$ has $i+1$ visible keys, so the whole matrix has $\sum_{i=0}^{L-1} (i+1) = L(L+1)/2$ visible
# scores: just over half of $L^2$. The useful arithmetic is therefore half of the non-causal
# $4BHL^2D$, and **causal TFLOPS are counted on $2BHL^2D$**: a causal kernel that computes every score
# and masks half of them reports half the TFLOPS of one that skips them.
#
# A FlashAttention kernel works in tiles: a program owns `BLOCK_M` queries and walks the keys in
# blocks of `BLOCK_N`. Each tile of the score matrix is one of three kinds:
#
# * **below the diagonal**: every key of the tile comes before every query of the tile
#   ($j < \text{first query} \le i$): the mask hides nothing;
# * **on the diagonal**: the tile holds both $j \le i$ and $j > i$: the mask is needed here;
# * **above the diagonal**: every key comes after every query: the mask hides everything. Loading
#   such a tile, multiplying and then masking all of it is pure waste.
#
# For query block $m$ (queries $mB_M, \dots, mB_M + B_M - 1$) with $B_M$ a multiple of $B_N$,
# the tiles below the diagonal are the keys $[0, mB_M)$ and the diagonal tiles are the keys
# $[mB_M, \min((m+1)B_M, L))$. With $n = L/B_M$ query blocks and $B_M = 2B_N$, block $m$ visits
# $2(m+1)$ key blocks, $n(n+1)$ in all, against $2n^2$ without the mask: a fraction
# $\tfrac12 + \tfrac{1}{2n}$ of the tiles, which tends to one half as $L$ grows (0.504 at $L = 16\,384$).
#
# The left picture is the non-causal kernel's work; the right one is drawn from the grader's own mask
# (blue cells are visible scores) with the tiles a causal kernel must visit hatched, labelled with the
# stage that handles them. Every white tile is one your kernel must not load.

# %% nbgrader={"grade": false, "grade_id": "plot_stages", "locked": true, "schema_version": 3, "solution": false, "task": false}
import matplotlib.pyplot as plt

from autograder.problems.problem4 import plot_stages

plot_stages(seq_len=512, block_m=128, block_n=64)
plt.show()

# %% [markdown]
# ## 2. The stage split
#
# Masking costs something: for every score, compare two indices and select. Doing that on every tile
# would put a compare-and-select into the kernel's innermost loop for no reason, since only the one or
# two diagonal tiles of a row need it. So the kernel (like the Triton tutorial's fused attention)
# walks the keys of a query block in **two stages**:
#
# 1. **stage 1**: the key blocks strictly below the diagonal, $[0, mB_M)$, with the same fast update
#    as problem 3 and no mask at all. Every key there exists ($mB_M < L$), so the loads need no bounds
#    check either.
# 2. **stage 2**: the diagonal key blocks, $[mB_M, \min((m+1)B_M, L))$, with the causal mask: a score
#    with $j > i$ becomes $-\infty$ before the row maximum.
#
# The key blocks above the diagonal, $[(m+1)B_M, L)$, are never loaded. Three facts make this exact,
# and each one is a place where a kernel goes wrong:
#
# * **Each visible key is visited exactly once.** The online softmax adds the terms $e^{s_{ij} - m}$ of
#   every block it is given; a block that both stages visit is counted twice. Stage 1 must stop exactly
#   where stage 2 starts.
# * **No row ever starts from an empty block.** Stage 1 runs first, and its blocks are fully visible.
#   For the first query block there is no stage 1, but its first diagonal block holds key 0, which
#   every query sees. So the running max $m_i$ is finite after the first block, and
#   $\alpha = 2^{m_{\text{old}} - m_{\text{new}}}$ never meets $2^{-\infty - (-\infty)}$. A mask that also hides
#   $j = i$ leaves query 0 with no key at all: its row becomes NaN.
# * **The causal mask is the sequence-end mask too.** In problem 3 the last key block had to hide the
#   keys past $L$, which the masked load fills with zeros. Here those keys only appear in stage 2, and
#   for every row that is stored ($i < L$), $j \le i$ already implies $j < L$. Rows $i \ge L$ of the
#   last block are computed on padding and never stored.
#
# The picture shows the kernel's order: each row of tiles is walked left to right, 1s before 2s. The
# kernel also launches the query blocks with the most tiles first, so that short ones fill in at the end
# instead of leaving the GPU half idle.

# %% [markdown]
# ## 3. Your code
#
# The kernel below the next cell is problem 3's with the stage split: it asks **your**
# `causal_key_range` for the two ranges, walks stage 1 with `ON_DIAGONAL=False` and stage 2 with
# `ON_DIAGONAL=True`, and finishes with **your** `finalize`. Write the three `@triton.jit` functions:
#
# * `causal_key_range(start_m, BLOCK_M, BLOCK_N, seq_len)`: return `(lo1, hi1, lo2, hi2)`, the keys
#   $[lo_1, hi_1)$ of stage 1 and $[lo_2, hi_2)$ of stage 2 for query block `start_m`. `tl.minimum(a, b)`
#   takes the smaller of two values. Blocks of keys outside both ranges are skipped: that is where the
#   speed comes from, and the grader counts them.
# * `online_softmax_update(acc, l_i, m_i, s, v, query_idx, key_idx, ON_DIAGONAL)`: your update from
#   problem 3, with the causal mask in place of the tail mask: when `ON_DIAGONAL` is true, the scores of
#   keys after their query must be $-\infty$ before the row maximum. `query_idx[:, None]` and
#   `key_idx[None, :]` broadcast to the tile.
# * `finalize(acc, l_i, m_i)`: the normalised output and the natural-log LSE, as in problem 3.
#
# Keep the cell to `@triton.jit` functions (and constants, if you want any): no imports, no other
# statements. When grading, the tests run in a fresh interpreter that holds only the course's cells and
# this one, not in this notebook: their verdicts are your points, and your feedback shows them under
# each test cell. Do not call
# PyTorch's attention, softmax or matmul anywhere. On the CPU interpreter everything runs in float16,
# because bfloat16 `tl.dot` gives wrong results there (a known interpreter bug); on a GPU the checks use both.
#
# The wrapper takes an optional `_visits` tensor that only the checks use: each program adds to it the
# number of key blocks it processed. The kernel also keeps any range you return inside the sequence for
# its loads, so a wrong range gives wrong numbers (and a clear diagnosis), not a memory fault.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math

import torch
import triton
import triton.language as tl

LN_2 = tl.constexpr(0.6931471805599453)  # log(2): converts base-2 logs back to natural
LOG2_E = 1.4426950408889634              # log2(e): turns exp(x) into exp2(x * LOG2_E)


# %% nbgrader={"grade": false, "grade_id": "causal", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def causal_key_range(start_m, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, seq_len):
    """The keys that query block `start_m` (queries start_m*BLOCK_M ... start_m*BLOCK_M + BLOCK_M - 1)
    must visit, split into the kernel's two stages.

    Returns (lo1, hi1, lo2, hi2):
      stage 1 walks keys [lo1, hi1) in blocks of BLOCK_N with NO mask: every key there must be
              visible to every query of the block;
      stage 2 walks keys [lo2, hi2) in blocks of BLOCK_N with the causal mask (ON_DIAGONAL=True).
    Each key any query of the block can see must be visited exactly once; blocks that no query of
    the block can see must not be visited at all. BLOCK_M is a multiple of BLOCK_N.
    """
    ### BEGIN SOLUTION
    # Keys before the query block's first row are visible to all of its rows.
    lo1 = 0
    hi1 = start_m * BLOCK_M
    # The diagonal: keys of the query block's own span; none past the last query of the sequence.
    lo2 = start_m * BLOCK_M
    hi2 = tl.minimum((start_m + 1) * BLOCK_M, seq_len)
    ### END SOLUTION
    return lo1, hi1, lo2, hi2


@triton.jit
def online_softmax_update(acc, l_i, m_i, s, v, query_idx, key_idx, ON_DIAGONAL: tl.constexpr):
    """Fold one block of keys into the running softmax of a block of queries.

    acc        (BLOCK_M, HEAD_DIM) float32  un-normalised sum of p @ V so far
    l_i        (BLOCK_M,)          float32  running sum of exp2(s - m_i)
    m_i        (BLOCK_M,)          float32  running row maximum of s (base-2 units)
    s          (BLOCK_M, BLOCK_N)  float32  scores of this block, already times softmax_scale * log2(e)
    v          (BLOCK_N, HEAD_DIM) 16-bit   values of this block
    query_idx  (BLOCK_M,)          int32    position of each query in the sequence
    key_idx    (BLOCK_N,)          int32    position of each key in the sequence
    ON_DIAGONAL: True in stage 2, where some keys lie after some queries

    Returns the updated (acc, l_i, m_i).
    """
    ### BEGIN SOLUTION
    if ON_DIAGONAL:
        # Query i may look at key j only if j <= i. For every row that is stored (i < seq_len)
        # this also hides the keys past the end of the sequence.
        s = tl.where(key_idx[None, :] <= query_idx[:, None], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.math.exp2(m_i - m_new)          # how much the old max overestimated
    p = tl.math.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc)        # 16-bit operands, float32 accumulation
    m_i = m_new
    ### END SOLUTION
    return acc, l_i, m_i


@triton.jit
def finalize(acc, l_i, m_i):
    """Turn the running state into the output block and its log-sum-exp.

    Returns (o, lse): o is (BLOCK_M, HEAD_DIM) float32, lse is (BLOCK_M,) float32 in
    natural log, i.e. log(sum_j exp(q . k_j * softmax_scale)) over the visible keys j <= i.
    """
    ### BEGIN SOLUTION
    o = acc / l_i[:, None]
    lse = (m_i + tl.math.log2(l_i)) * LN_2
    ### END SOLUTION
    return o, lse


# %% nbgrader={"grade": false, "grade_id": "kernel", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.tma import is_hopper_or_newer, tile_descriptor, tma_ready
from autograder.validation import check_attention_inputs


@triton.jit
def _query_block_of_program(n_bh, seq_len, heads_per_group, BLOCK_M: tl.constexpr):
    """(off_bh, start_m): the (batch * head, query block) this program computes.

    The last query blocks have the most keys to visit, so they are launched first and the short
    ones fill in at the end. The GPU launches programs in order of their id, so the ids go
    through the heads in groups of `heads_per_group`: inside a group, the longest blocks of all
    its heads come first. One group's K/V stays in the L2 cache while its programs read it.
    """
    n_m = tl.cdiv(seq_len, BLOCK_M)
    pid = tl.program_id(0)
    group = pid // (n_m * heads_per_group)
    first_bh = group * heads_per_group
    heads_here = tl.minimum(heads_per_group, n_bh - first_bh)  # the last group may be smaller
    within = pid - group * n_m * heads_per_group
    return first_bh + within % heads_here, n_m - 1 - within // heads_here


@triton.jit
def _causal_attention_kernel(
    Q, K, V, O, LSE, VISITS,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    n_heads, n_bh, heads_per_group, seq_len, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, COUNT_VISITS: tl.constexpr,
):
    # One program computes BLOCK_M query rows of one (batch, head), the longest blocks first.
    off_bh, start_m = _query_block_of_program(n_bh, seq_len, heads_per_group, BLOCK_M)
    off_b = (off_bh // n_heads).to(tl.int64)  # int64: B*H*L*D can pass 2**31
    off_h = (off_bh % n_heads).to(tl.int64)

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    # K is read transposed, (HEAD_DIM, BLOCK_N), so that q @ k is a plain tl.dot.
    kt_ptrs = K + off_b * stride_kb + off_h * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    v_ptrs = V + off_b * stride_vb + off_h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd

    q = tl.load(q_ptrs, mask=offs_m[:, None] < seq_len, other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    visits = 0

    lo1, hi1, lo2, hi2 = causal_key_range(start_m, BLOCK_M, BLOCK_N, seq_len)
    # Whatever the ranges say, no load may leave the sequence: stage 1 loads without a mask, so
    # it only takes blocks that lie wholly inside [0, seq_len). A right range is never cut.
    lo1 = tl.maximum(lo1, 0)
    hi1 = tl.minimum(hi1, seq_len - BLOCK_N + 1)
    lo2 = tl.maximum(lo2, 0)

    # Stage 1: blocks strictly below the diagonal. No mask, no bounds checks: the fast path.
    for start_n in range(lo1, hi1, BLOCK_N):
        kt = tl.load(kt_ptrs + start_n * stride_kn)
        v = tl.load(v_ptrs + start_n * stride_vn)
        s = tl.dot(q, kt) * qk_scale
        acc, l_i, m_i = online_softmax_update(acc, l_i, m_i, s, v, offs_m, start_n + offs_n, ON_DIAGONAL=False)
        if COUNT_VISITS:
            visits += 1
    # Stage 2: the diagonal block(s), where some keys come after some queries: the causal mask.
    # Keys past the end are loaded as zeros (the sequence-end mask of the loads).
    for start_n in range(lo2, hi2, BLOCK_N):
        key_idx = start_n + offs_n
        kt = tl.load(kt_ptrs + start_n * stride_kn, mask=key_idx[None, :] < seq_len, other=0.0)
        v = tl.load(v_ptrs + start_n * stride_vn, mask=key_idx[:, None] < seq_len, other=0.0)
        s = tl.dot(q, kt) * qk_scale
        acc, l_i, m_i = online_softmax_update(acc, l_i, m_i, s, v, offs_m, key_idx, ON_DIAGONAL=True)
        if COUNT_VISITS:
            visits += 1
    if COUNT_VISITS:
        # Only the grader's block-skipping check sets this: one counter per program.
        tl.atomic_add(VISITS + off_bh * tl.cdiv(seq_len, BLOCK_M) + start_m, visits)

    o, lse = finalize(acc, l_i, m_i)
    o_ptrs = O + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, o.to(O.dtype.element_ty), mask=offs_m[:, None] < seq_len)
    tl.store(LSE + off_bh.to(tl.int64) * seq_len + offs_m, lse, mask=offs_m < seq_len)


@triton.jit
def _causal_attention_kernel_tma(
    desc_q, desc_k, desc_v, desc_o, LSE, VISITS, n_heads, n_bh, heads_per_group, seq_len, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, COUNT_VISITS: tl.constexpr,
    OUT_DTYPE: tl.constexpr,
):
    # The same program with the tiles fetched through tensor descriptors (Hopper and newer, as in
    # problem 3): one instruction per tile, and rows past the end of the sequence arrive as zeros.
    off_bh, start_m = _query_block_of_program(n_bh, seq_len, heads_per_group, BLOCK_M)
    off_b = off_bh // n_heads
    off_h = off_bh % n_heads
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)

    q = desc_q.load([off_b, off_h, start_m * BLOCK_M, 0]).reshape(BLOCK_M, HEAD_DIM)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    visits = 0

    lo1, hi1, lo2, hi2 = causal_key_range(start_m, BLOCK_M, BLOCK_N, seq_len)
    lo1 = tl.maximum(lo1, 0)  # the same clamps as above, so that both kernels visit the same blocks
    hi1 = tl.minimum(hi1, seq_len - BLOCK_N + 1)
    lo2 = tl.maximum(lo2, 0)

    for start_n in range(lo1, hi1, BLOCK_N):
        k = desc_k.load([off_b, off_h, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        v = desc_v.load([off_b, off_h, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        s = tl.dot(q, k.T) * qk_scale
        acc, l_i, m_i = online_softmax_update(acc, l_i, m_i, s, v, offs_m, start_n + offs_n, ON_DIAGONAL=False)
        if COUNT_VISITS:
            visits += 1
    for start_n in range(lo2, hi2, BLOCK_N):
        k = desc_k.load([off_b, off_h, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        v = desc_v.load([off_b, off_h, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        s = tl.dot(q, k.T) * qk_scale
        acc, l_i, m_i = online_softmax_update(acc, l_i, m_i, s, v, offs_m, start_n + offs_n, ON_DIAGONAL=True)
        if COUNT_VISITS:
            visits += 1
    if COUNT_VISITS:
        tl.atomic_add(VISITS + off_bh * tl.cdiv(seq_len, BLOCK_M) + start_m, visits)

    o, lse = finalize(acc, l_i, m_i)
    desc_o.store([off_b, off_h, start_m * BLOCK_M, 0], o.to(OUT_DTYPE).reshape(1, 1, BLOCK_M, HEAD_DIM))
    tl.store(LSE + off_bh.to(tl.int64) * seq_len + offs_m, lse, mask=offs_m < seq_len)


# (BLOCK_M, BLOCK_N, num_warps, num_stages) per head dim. BLOCK_M is a multiple of BLOCK_N, so a
# query block's diagonal is a whole number of key blocks. Hopper: the fastest of a sweep on an H100
# (scripts/tune_kernels.py --problem problem4, docs/gpu-results.md). Elsewhere: 128x64 tiles with
# 8 warps, with 2 stages at D = 128 (about 96 KB of shared memory) so that they fit the 100-164 KB
# of Ampere and Ada GPUs.
_HOPPER_CONFIGS = {16: (128, 64, 8, 3), 32: (128, 64, 8, 3), 64: (128, 128, 4, 3), 128: (128, 128, 8, 3)}
_DEFAULT_CONFIGS = {16: (128, 64, 8, 3), 32: (128, 64, 8, 3), 64: (128, 64, 8, 3), 128: (128, 64, 8, 2)}


def launch_config(q):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for this input's head dim and GPU."""
    return (_HOPPER_CONFIGS if is_hopper_or_newer(q) else _DEFAULT_CONFIGS)[q.shape[-1]]


# Heads per group of the longest-first launch order (_query_block_of_program). More heads spread
# the longest blocks better over the GPU; fewer keep the programs that run at the same time on
# the same K/V, which then comes from the L2 cache. On an H100 (B=4 H=16, D = 64 and 128,
# L = 4096 and 16384) 8 was the fastest or within 1% of it: 7-9% faster than one head at a time
# at D = 64, 5-16% faster than all heads at once (scripts/tune_kernels.py --head-groups).
_HEADS_PER_GROUP = 8


def flash_attention_causal(q, k, v, _visits=None, *, config=None, tma=True, heads_per_group=None):
    """Causal attention: query i attends to keys j <= i. (B, H, L, D) tensors, as many keys as queries.

    Returns (o, lse): o like q, lse float32 (B, H, L) in natural log. `_visits` (int32, one entry
    per program: B*H*cdiv(L, BLOCK_M)) is for the grader's block-skipping check: each program adds
    the number of key blocks it processed.
    For sweeps (scripts/tune_kernels.py): `config` = (BLOCK_M, BLOCK_N, num_warps, num_stages)
    replaces launch_config(q), `tma=False` takes the pointer kernel on a Hopper GPU too, and
    `heads_per_group` replaces _HEADS_PER_GROUP of the launch order.
    """
    check_attention_inputs(q, k, v)
    batch, n_heads, seq_len, head_dim = q.shape
    if k.shape[2] != seq_len:
        raise ValueError(f"causal attention needs as many keys as queries, got Lq={seq_len}, Lk={k.shape[2]}")
    o = torch.empty_like(q)
    lse = torch.empty((batch, n_heads, seq_len), device=q.device, dtype=torch.float32)
    block_m, block_n, num_warps, num_stages = config or launch_config(q)
    heads_per_group = heads_per_group or _HEADS_PER_GROUP
    grid = (batch * n_heads * triton.cdiv(seq_len, block_m),)
    if _visits is not None and (_visits.dtype != torch.int32 or _visits.numel() != grid[0]):
        raise ValueError(f"_visits must be an int32 tensor of {grid[0]} counters")
    visits = lse if _visits is None else _visits  # a placeholder pointer unless counting
    qk_scale = LOG2_E / math.sqrt(head_dim)  # fold the softmax scale into exp2
    if tma and tma_ready(q, k, v, o):
        _causal_attention_kernel_tma[grid](
            tile_descriptor(q, block_m), tile_descriptor(k, block_n), tile_descriptor(v, block_n),
            tile_descriptor(o, block_m), lse, visits,
            n_heads, batch * n_heads, heads_per_group, seq_len, qk_scale,
            HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, COUNT_VISITS=_visits is not None,
            OUT_DTYPE=tl.bfloat16 if q.dtype == torch.bfloat16 else tl.float16,
            num_warps=num_warps, num_stages=num_stages,
        )
        return o, lse
    _causal_attention_kernel[grid](
        q, k, v, o, lse, visits,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        n_heads, batch * n_heads, heads_per_group, seq_len, qk_scale,
        HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, COUNT_VISITS=_visits is not None,
        num_warps=num_warps, num_stages=num_stages,
    )
    return o, lse


flash_attention_causal.launch_config = launch_config  # the checks read the block sizes from here:
# launch_config(q) -> (BLOCK_M, BLOCK_N, num_warps, num_stages)

# %% [markdown]
# ### Check as you go, and a hint when you are stuck
#
# Run the next cell after every change to your cell (run the *Your code* cell and the kernel cell
# again first, so that the kernel picks up your edit). It runs the visible shapes of section 4
# (whole blocks, a short last block), output and log-sum-exp, then counts the key blocks your kernel
# visits, and gives the same diagnosis the grader gives: for a wrong case, the first bad
# (batch, head, row) and the likely cause.
#
# If you are stuck, the cell after it is a hint ladder: each run reveals one more step, two nudges
# first and then the idea of the solution in words (never the code). `hint("problem4", 1)` shows a
# step again.

# %% nbgrader={"grade": false, "grade_id": "self_check", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem4 import check

check(flash_attention_causal)  # the visible shapes, with the grader's diagnosis when one is wrong

# %% nbgrader={"grade": false, "grade_id": "hints", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.hints import hint

hint("problem4");  # each run reveals the next step

# %% [markdown]
# ## 4. Check your work
#
# Each check prints one line per test input: `PASS` or `FAIL`, the largest error against a float64
# reference, and for a failure *where* it goes wrong and the most likely cause. The checks re-enact the
# typical causal mistakes (a mask off by one, no mask, the diagonal visited twice, ranges off by a
# block) with your kernel's tile sizes and name the one your output matches. The last visible check
# counts the key blocks each program visits and compares the count with the causal minimum.

# %% nbgrader={"grade": true, "grade_id": "test_causal_full_blocks", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.checks import assert_cases
from autograder.inputs import Case
from autograder.problems.problem4 import causal_diagnoses

# Whole blocks of queries and keys; output and log-sum-exp.
assert_cases(flash_attention_causal, [
    Case(1, 2, 128, 64, causal=True),
    Case(2, 2, 256, 32, seed=1, causal=True),
], diagnoses=causal_diagnoses(flash_attention_causal))

# %% nbgrader={"grade": true, "grade_id": "test_causal_tail", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.checks import assert_cases
from autograder.inputs import Case
from autograder.problems.problem4 import causal_diagnoses

# L = 200: the last query block is cut short, and so is its diagonal.
assert_cases(flash_attention_causal, [Case(1, 2, 200, 64, seed=2, causal=True)], diagnoses=causal_diagnoses(flash_attention_causal))

# %% nbgrader={"grade": true, "grade_id": "test_block_skipping", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem4 import assert_block_visits

# Block skipping: each program visits only the key blocks below and on its diagonal.
assert_block_visits(flash_attention_causal, [Case(1, 2, 300, 32, seed=3, causal=True)])

# %% [markdown]
# ### What the grader also checks
#
# The cells below hold tests you cannot see. They check, in this order: sequence lengths that are not
# multiples of the block sizes (a single token, fewer tokens than one query block, one past a block);
# several batches and heads with every head dimension from 16 to 128, bfloat16 and float16, and inputs
# that are not contiguous in memory; the log-sum-exp; and the number of key blocks visited on more
# lengths. If the visible checks pass and your ranges follow the picture, these will too.

# %% nbgrader={"grade": true, "grade_id": "test_hidden_lengths", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.checks import assert_cases
from autograder.inputs import Case
from autograder.problems.problem4 import causal_diagnoses

# Hidden: sequence lengths that are not multiples of the block sizes.
### BEGIN HIDDEN TESTS
assert_cases(flash_attention_causal, [
    Case(1, 1, 1, 64, seed=10, causal=True),
    Case(2, 2, 17, 32, seed=11, causal=True),
    Case(2, 1, 65, 16, seed=12, causal=True),
    Case(1, 2, 127, 64, seed=13, causal=True),
    Case(1, 1, 129, 64, seed=14, causal=True),
    Case(1, 3, 200, 128, seed=15, causal=True),
], check_lse=False, diagnoses=causal_diagnoses(flash_attention_causal))
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_shapes", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.checks import assert_cases
from autograder.inputs import Case
from autograder.problems.problem4 import causal_diagnoses

# Hidden: several batches and heads, every head dimension, bf16 and fp16, non-contiguous inputs.
### BEGIN HIDDEN TESTS
assert_cases(flash_attention_causal, [
    Case(2, 3, 128, 16, seed=20, causal=True),
    Case(3, 2, 160, 32, seed=21, causal=True),
    Case(2, 2, 192, 64, "bfloat16", seed=22, causal=True),
    Case(1, 2, 256, 128, "bfloat16", "bshd", seed=23, causal=True),
    Case(2, 2, 130, 64, "float16", "bshd", seed=24, causal=True),
    Case(1, 2, 192, 32, "float16", "strided_d", seed=25, causal=True),
], check_lse=False, diagnoses=causal_diagnoses(flash_attention_causal))
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_lse", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.checks import assert_cases
from autograder.inputs import Case
from autograder.problems.problem4 import causal_diagnoses

# Hidden: the log-sum-exp, in natural log, over the visible keys only.
### BEGIN HIDDEN TESTS
assert_cases(flash_attention_causal, [
    Case(1, 1, 1, 16, seed=40, causal=True),
    Case(1, 2, 128, 64, seed=41, causal=True),
    Case(2, 2, 333, 32, seed=42, causal=True),
], diagnoses=causal_diagnoses(flash_attention_causal))
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_block_skipping", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem4 import assert_block_visits

# Hidden: block skipping at lengths around the block sizes, several heads and head dims.
### BEGIN HIDDEN TESTS
assert_block_visits(flash_attention_causal, [
    Case(1, 1, 1, 16, seed=50, causal=True),
    Case(2, 1, 129, 64, seed=51, causal=True),
    Case(1, 1, 256, 128, seed=52, causal=True),
    Case(1, 1, 383, 16, seed=53, causal=True),
])
### END HIDDEN TESTS

# %% [markdown]
# ## 5. How fast is it?
#
# On a GPU the next cell times your kernel against PyTorch's `scaled_dot_product_attention(...,
# is_causal=True)` with two backends pinned (FlashAttention-2 and cuDNN), and against a non-causal
# kernel doing the full $L \times L$ work (problem 3's reference where the course's sources are
# installed, else SDPA's non-causal FlashAttention-2), all in the same run, with `triton.testing.do_bench`
# medians. Causal TFLOPS count $2BHL^2D$. A kernel that skips the hidden tiles takes close to half the
# non-causal time at long $L$ (the $\tfrac12 + \tfrac1{2n}$ above); one that only masks them takes as long.
# On the CPU interpreter there is nothing meaningful to time, and the cell says so.

# %% nbgrader={"grade": false, "grade_id": "benchmark", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem4 import benchmark

benchmark(flash_attention_causal)

# %% [markdown]
# ### Performance points (2 of the 12)
#
# The last graded cell times your kernel against the course's reference kernel, on the same GPU,
# in the same run, on the same inputs, taking turns over several rounds: the grade is the **ratio**
# of the two times, so it means the same on a T4, an A100 or an H100 and does not depend on what
# else the grading machine was doing. A ratio of at most 1.3 earns both points, at most 1.6 one
# point, anything slower none; a kernel that fails the self-check earns none, however fast.
# Kernels that do what the reference does measure 0.95-1.1; one that does twice the work, about 2.
# Under the CPU interpreter (no GPU) the ratio measures how much work your kernel does rather than
# how fast a GPU would run it. Without the course's `solutions/` folder (a learner's install) the
# cell only says that it is measured at grading time.

# %% nbgrader={"grade": true, "grade_id": "test_performance", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem4 import performance_points

# Performance: your kernel's time over the reference kernel's, on the same GPU in the same run.
# Ratio <= 1.3 earns both points, <= 1.6 one; a kernel that fails the self-check earns none.
# Under the CPU interpreter the ratio measures how much work the kernel does, not GPU speed.
performance_points(flash_attention_causal)

# %% [markdown] nbgrader={"grade": false, "grade_id": "outro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 6. What you built, and what comes next
#
# Your kernel computes exactly the scores the mask leaves, plus the few masked ones on the diagonal:
# about half the work of problem 3 at long sequences, with the mask's cost confined to one or two tiles
# per row. The same pattern (decide per tile whether it is full, partial or empty; mask only the partial
# ones; never load the empty ones) carries the next problems: grouped-query attention changes which K/V
# head a program reads, and sliding windows with attention sinks change which tiles are empty.
