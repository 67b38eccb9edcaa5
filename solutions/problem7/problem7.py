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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/flash-attention-course/flash-attention-course/blob/main/notebooks/problem7/problem7.ipynb)
#
# Runs in Colab (GPU or CPU), on a laptop without a GPU, or on a GPU machine: [how to start, and what each can do](https://github.com/flash-attention-course/flash-attention-course/blob/main/README.md#start).

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Problem 7 · The FlashAttention-2 backward in Triton
#
# Problems 3 and 4 computed attention's output $O$ and saved one number per query row, the
# log-sum-exp, "for the backward pass". This chapter is that backward pass. Training a model means
# gradients: for every attention layer the optimiser needs $\partial\mathcal{L}/\partial Q$,
# $\partial\mathcal{L}/\partial K$ and $\partial\mathcal{L}/\partial V$, given the gradient
# $dO = \partial\mathcal{L}/\partial O$ that arrives from the layers above. You will write the
# recurrences of FlashAttention-2's backward (rebuild $P$ from the log-sum-exp, then $dV$, $dP$, $dS$,
# $dK$ and $dQ$) inside two Triton kernels, and join them with the forward in a
# `torch.autograd.Function`, so that `loss.backward()` runs your kernels.
#
# **You will learn** why the backward recomputes the attention matrix instead of storing it, how the
# softmax's gradient collapses to one number per row (the $\Delta$ trick), how the work is split
# between a program per block of keys and a program per block of queries so that no two programs
# write the same gradient, and where the softmax scale goes.
#
# **How this notebook works.** Run the cells from the top. The first code cell installs the course
# when it is missing (in Colab) and picks the GPU, or Triton's CPU interpreter when there is no GPU
# that Triton supports. You edit one cell, marked *Your code*: five small `@triton.jit` functions. The
# kernels, their loops and loads, and the forward are given. The self-check right after your cell says
# which gradient is wrong, where, and why; a hint cell reveals one step at a time; the check cells of
# section 5 earn the points, and the grader runs more of the same kind on shapes you do not see.

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
# ## 1. Training needs gradients, and the forward kept almost nothing
#
# For one head, with $S = \sigma\, QK^\top$ ($\sigma = 1/\sqrt{D}$, the softmax scale),
# $P = \operatorname{softmax}(S)$ row by row and $O = PV$, the backward receives $dO$ (same shape
# as $O$, $L \times D$) and must return $dQ$, $dK$, $dV$.
#
# The textbook way keeps $P$ from the forward: an $L \times L$ matrix per head. At $B = 4$, $H = 16$,
# $L = 16\,384$ that is $1.7 \cdot 10^{10}$ numbers, 34 GB in bf16, for one layer: the very matrix the
# forward worked so hard never to write. FlashAttention's answer is to **recompute**. The forward saves
# $O$ and the log-sum-exp $\mathrm{LSE}_i = \log \sum_j e^{S_{ij}}$ (one number per row, $O(L)$ memory),
# and the backward rebuilds each tile of $P$ when it needs it:
#
# $$P_{ij} = \frac{e^{S_{ij}}}{\sum_{j'} e^{S_{ij'}}} = e^{S_{ij} - \mathrm{LSE}_i} .$$
#
# One exponential per score, no running maximum, no second pass: the LSE already holds the row's
# maximum and its normaliser. Recomputing $S = \sigma QK^\top$ costs one more matmul per tile; reading
# a stored $P$ back from memory would cost far more time on a GPU, whose arithmetic is about two
# hundred times faster than its memory (and the memory would not be there to begin with).
#
# The price is arithmetic: the backward does five $L \times L \times D$ matmuls per head ($S$ again,
# $dV$, $dP$, $dQ$, $dK$) where the forward did two, so **backward FLOPs are $2.5\times$ the forward's**
# $4BHL^2D$ (halved when causal).

# %% [markdown]
# ## 2. The math of the backward, and the $\Delta$ trick
#
# Write the loss's gradient flowing back through $O = PV$, then the softmax, then $S = \sigma QK^\top$.
#
# **Through $O = PV$.** Each output row is $O_i = \sum_j P_{ij} V_j$, so
#
# $$dV = P^\top dO, \qquad dP = dO\, V^\top .$$
#
# **Through the softmax.** Row $i$ of $P$ depends on every score of row $i$:
# $\partial P_{ij}/\partial S_{ik} = P_{ij}(\delta_{jk} - P_{ik})$. So
#
# $$dS_{ik} = \sum_j dP_{ij}\, P_{ij}(\delta_{jk} - P_{ik}) = P_{ik}\Bigl(dP_{ik} - \sum_j P_{ij}\, dP_{ij}\Bigr)
# = P_{ik}\,(dP_{ik} - \Delta_i).$$
#
# $\Delta_i = \sum_j P_{ij} dP_{ij}$ is a sum over the **whole row** of keys, which a kernel that walks
# the keys block by block does not have when it needs it. The trick: substitute $dP_{ij} = dO_i \cdot V_j$,
#
# $$\Delta_i = \sum_j P_{ij}\,(dO_i \cdot V_j) = dO_i \cdot \Bigl(\sum_j P_{ij} V_j\Bigr) = dO_i \cdot O_i ,$$
#
# a dot product of two rows the backward already has: $\Delta = \operatorname{rowsum}(dO \circ O)$, $D$
# multiplications per row instead of $L$. A small **preprocess** kernel computes it once, before the
# main kernels.
#
# **Through $S = \sigma QK^\top$.** $S_{ij} = \sigma\, Q_i \cdot K_j$, so
#
# $$dQ = \sigma\, dS\, K, \qquad dK = \sigma\, dS^\top Q .$$
#
# The scale belongs to $dQ$ and $dK$ (both are inside $S$) and not to $dV$ ($O = PV$ has no scale).
#
# **Causal attention** changes nothing in these formulas: a masked score had $P_{ij} = 0$ in the forward,
# so its $dS_{ij} = 0$ too. The recomputed $P$ must therefore be **zero** where $j > i$; the forward's
# $-\infty$ did that, and the recompute must do it again.
#
# **In base 2.** As in the forward, the kernels work with `qk_scale` $= \sigma \log_2 e$ and `exp2`:
# `qk * qk_scale` $= S_{ij}\log_2 e$. The saved LSE is in natural log (the course's convention), so in
# base 2 it is $\mathrm{LSE}_i \log_2 e$: $P_{ij} = 2^{S_{ij}\log_2 e - \mathrm{LSE}_i \log_2 e}$. Forget
# the factor on the LSE, and every row of $P$ is $e^{(1 - \ln 2)\,\mathrm{LSE}_i}$ times too large.

# %% [markdown]
# ## 3. Two kinds of program, and which tiles each one visits
#
# $dV$ and $dK$ are sums over **queries** ($dV_j = \sum_i P_{ij} dO_i$); $dQ$ is a sum over **keys**. A
# program that owns a block of keys can add up its $dK$ and $dV$ privately while it walks down the
# query blocks; a program that owns a block of queries can add up its $dQ$ while it walks along the key
# blocks. So the backward is a preprocess and one launch with two kinds of program:
#
# 1. **preprocess**: $\Delta = \operatorname{rowsum}(dO \circ O)$, per block of query rows;
# 2. **dK/dV programs**: one per (block of `BLOCK_N1` keys, batch × head). It loads its $K_j$,
#    $V_j$ once, walks the query blocks (`BLOCK_M1` rows at a time), rebuilds $P$ for each tile and adds
#    $P^\top dO$ to $dV$ and $\sigma\, dS^\top Q$ to $dK$; it stores $dK_j$, $dV_j$ once;
# 3. **dQ programs**: one per (block of `BLOCK_M2` queries, batch × head). It walks the key blocks,
#    rebuilds the same $P$ and $dS$, and adds $\sigma\, dS K$ to $dQ_i$; it stores $dQ_i$ once.
#
# The dK/dV and dQ programs share one grid: the first `cdiv(L, BLOCK_N1)` programs of each
# (batch × head) own key blocks, the rest query blocks. Both need only $\Delta$, $Q$, $K$, $V$, $dO$ and
# the LSE, none another's result, so they may run side by side, and a short training step, which waits
# on the host's launches, pays for one launch less.
#
# Each gradient block is written by exactly one program: no atomics, no races. The cost is that $P$
# and $dP$ are computed twice (once per kind of program); the fused alternative (one program does both
# walks, as in Triton's fused-attention tutorial) does not save that work either. FlashAttention-2's
# CUDA kernel and FlashAttention-3 pay the other price: the dK/dV programs also compute each query
# block's share of $dQ$ and add it into a float32 buffer with atomic adds, so $P$ is built once (five
# matmuls per tile instead of seven), and $dQ$ changes in its last bits from run to run, because the
# order of the additions does.
#
# The given kernels take that layout too, but only where it pays: on Hopper GPUs, for long sequences
# (where the tiles come through tensor descriptors) at $D \le 64$, the backward is one kernel of
# dK/dV programs that also add their $dQ$ shares into a float32 buffer, whole tiles at a time, by the
# tensor memory accelerator's (TMA's) bulk reductions. On an H200 that backward is 5-10% faster than
# the two kinds of program there, and 1.26-1.36x as fast as FlashAttention-2's own; at $D = 128$ it
# was 1.6x slower, so $D = 128$ keeps the two kinds. Its math is written out in the locked cell
# rather than through your functions. Where you need gradients that are the same bit for
# bit from run to run, pass `deterministic=True` to `flash_attention`, or turn on
# `torch.use_deterministic_algorithms(True)`: the backward then always runs the two kinds of program,
# and your five functions. The checks and the performance points always do.
#
# With the causal mask, a key block is seen only by the queries at or after it: the dK/dV program of
# key block $n$ starts at its own diagonal (masked) and walks down; the dQ program of query block $m$
# walks the keys up to its diagonal (masked last). The tiles above the diagonal are never loaded, as in
# problem 4. The picture shows one program of each kernel on the grader's own causal mask: **D** is a
# diagonal tile, where your code applies the mask, **1** a full tile, where it does not.

# %% nbgrader={"grade": false, "grade_id": "plot_programs", "locked": true, "schema_version": 3, "solution": false, "task": false}
import matplotlib.pyplot as plt

from autograder.problems.problem7 import plot_backward_programs

plot_backward_programs(seq_len=256, block_n1=64, block_m2=64, causal=True, key_block=1, query_block=2)
plt.show()

# %% [markdown]
# ## 4. Your code
#
# The kernels below your cell load the tiles and call **your** functions. Write the five `@triton.jit`
# functions of the next cell:
#
# * `softmax_delta(o, do)`: the preprocess's $\Delta_i = \sum_d O_{id}\, dO_{id}$ for a block of rows,
#   in float32.
# * `recompute_p(qk, lse, qk_scale, query_idx, key_idx, ON_DIAGONAL)`: $P$ of one tile from the raw
#   dot products `qk` and the natural-log `lse` (section 2, in base 2); when `ON_DIAGONAL` is true,
#   $P = 0$ where the key comes after the query. `ON_DIAGONAL` is only ever true in causal attention.
# * `score_grad(p, dp, delta)`: $dS = P \circ (dP - \Delta)$ for one tile.
# * `dkdv_update(dk, dv, q, k, v, do, lse, delta, qk_scale, sm_scale, query_idx, key_idx, ON_DIAGONAL)`:
#   one query block's contribution to this program's $dK$ and $dV$; return the updated `(dk, dv)`.
# * `dq_update(dq, q, k, v, do, lse, delta, qk_scale, sm_scale, query_idx, key_idx, ON_DIAGONAL)`:
#   one key block's contribution to this program's $dQ$; return the updated `dq`.
#
# Build `dkdv_update` and `dq_update` on `recompute_p` and `score_grad` first. Once the tests pass,
# there is a faster `dkdv_update`: with (queries, keys) tiles it has to transpose $P$ and $dS$ held in
# registers for $P^\top dO$ and $dS^\top Q$, a trip through shared memory on every step. Computing the
# tile transposed from the start, $S^\top = K Q^\top$, gives $P^\top$ and $dS^\top$ directly (the LSE
# and $\Delta$ then broadcast along columns: `lse[None, :]`); only `q` and `do`, loaded from memory, are
# transposed, which costs nothing. On an H200 that makes the backward 1.1x faster at D = 64.
#
# `tl.dot(a, b, acc)` returns `acc + a @ b` with float32 accumulation, `tl.trans(x)` transposes a tile,
# `tl.sum(x, axis=1)` sums a row, `x[:, None]` broadcasts a per-row value, `tl.where(c, a, b)` selects,
# `tl.math.exp2` is the fast base-2 exponential, and `LOG2_E` ($\log_2 e$) is defined in the cell above
# yours. Cast `p` and `ds` to the input dtype (`q.dtype`) before `tl.dot`: 16-bit operands run on the
# tensor cores. Inputs past the end of the sequence are loaded as zeros and contribute nothing; you need
# no bounds checks. The kernels load through pointers, or, for long sequences on a Hopper GPU, through
# tensor descriptors (the TMA unit copies whole tiles); your functions get the same tiles either way.
#
# Keep the cell to `@triton.jit` functions (and constants, if you want any): no imports, no other
# statements. When grading, the tests run in a fresh interpreter that holds only the course's cells and
# this one, not in this notebook: their verdicts are your points, and your feedback shows them under
# each test cell. Do not call PyTorch's attention, softmax or matmul
# anywhere. On the CPU interpreter everything runs in float16 (and float32), because bfloat16 `tl.dot`
# gives wrong results there (a known interpreter bug); on a GPU the checks use bfloat16 too.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math
import os

import torch
import triton
import triton.language as tl

LN_2 = tl.constexpr(0.6931471805599453)   # ln(2): base-2 logs back to natural
LOG2_E = tl.constexpr(1.4426950408889634)  # log2(e): exp(x) = exp2(x * LOG2_E)

# %% nbgrader={"grade": false, "grade_id": "backward", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def softmax_delta(o, do):
    """Delta of a block of query rows, the preprocess: Delta_i = sum_d O[i, d] * dO[i, d].

    o, do  (BLOCK_M, HEAD_DIM) in the input dtype. Returns (BLOCK_M,) float32.
    """
    ### BEGIN SOLUTION
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    ### END SOLUTION
    return delta


@triton.jit
def recompute_p(qk, lse, qk_scale, query_idx, key_idx, ON_DIAGONAL: tl.constexpr):
    """The probabilities P of one tile, rebuilt from the forward's log-sum-exp.

    qk         (BLOCK_M, BLOCK_N) float32  raw dot products q . k (not yet scaled)
    lse        (BLOCK_M,)         float32  the forward's log-sum-exp of each query row, NATURAL log
    qk_scale                      float32  softmax_scale * log2(e) = log2(e) / sqrt(D)
    query_idx  (BLOCK_M,)         int32    position of each query in the sequence
    key_idx    (BLOCK_N,)         int32    position of each key in the sequence
    ON_DIAGONAL: True only for causal tiles on the diagonal, where some keys come after some queries

    Returns P (BLOCK_M, BLOCK_N) float32: exp(qk * softmax_scale - lse), 0 where key j > query i
    on the diagonal.
    """
    ### BEGIN SOLUTION
    # exp(s - lse) = exp2(s * log2(e) - lse * log2(e)): the natural-log LSE goes to base 2 too.
    p = tl.math.exp2(qk * qk_scale - lse[:, None] * LOG2_E)
    if ON_DIAGONAL:
        p = tl.where(key_idx[None, :] <= query_idx[:, None], p, 0.0)
    ### END SOLUTION
    return p


@triton.jit
def score_grad(p, dp, delta):
    """dS = dL/dS of one tile, from P, dP = dO V^T and Delta: all float32; returns (BLOCK_M, BLOCK_N) float32."""
    ### BEGIN SOLUTION
    ds = p * (dp - delta[:, None])
    ### END SOLUTION
    return ds


@triton.jit
def dkdv_update(dk, dv, q, k, v, do, lse, delta, qk_scale, sm_scale, query_idx, key_idx,
                ON_DIAGONAL: tl.constexpr):
    """Add one block of queries' contribution to the dK and dV of this program's block of keys.

    dk, dv     (BLOCK_N, HEAD_DIM) float32  the sums so far
    q, do      (BLOCK_M, HEAD_DIM) 16-bit   queries and output gradients of this query block
    k, v       (BLOCK_N, HEAD_DIM) 16-bit   this program's keys and values
    lse, delta (BLOCK_M,)          float32  the forward's natural-log LSE and the preprocess's Delta
    sm_scale = 1/sqrt(D); qk_scale = sm_scale * log2(e)

    Returns the updated (dk, dv).
    """
    ### BEGIN SOLUTION
    # recompute_p and score_grad on the transposed tile (keys by queries): P^T and dS^T then come
    # out of their dots in the layout the next dots take, so no tile held in registers is
    # transposed, only tiles loaded from memory (q, do). On an H200 at D=64 the backward is 1.1x
    # faster so (docs/results/h200/problem7/tune_transposed).
    qk_t = tl.dot(k, tl.trans(q))                                # (BLOCK_N, BLOCK_M): S^T
    p_t = tl.math.exp2(qk_t * qk_scale - lse[None, :] * LOG2_E)
    if ON_DIAGONAL:
        p_t = tl.where(key_idx[:, None] <= query_idx[None, :], p_t, 0.0)
    dv = tl.dot(p_t.to(do.dtype), do, dv)                        # dV += P^T dO
    dp_t = tl.dot(v, tl.trans(do))                               # dP^T = V dO^T
    ds_t = p_t * (dp_t - delta[None, :])
    dk = tl.dot((ds_t * sm_scale).to(q.dtype), q, dk)            # dK += (scale dS)^T Q
    ### END SOLUTION
    return dk, dv


@triton.jit
def dq_update(dq, q, k, v, do, lse, delta, qk_scale, sm_scale, query_idx, key_idx, ON_DIAGONAL: tl.constexpr):
    """Add one block of keys' contribution to the dQ of this program's block of queries.

    dq         (BLOCK_M, HEAD_DIM) float32  the sum so far
    q, do      (BLOCK_M, HEAD_DIM) 16-bit   this program's queries and output gradients
    k, v       (BLOCK_N, HEAD_DIM) 16-bit   keys and values of this key block
    lse, delta (BLOCK_M,)          float32

    Returns the updated dq.
    """
    ### BEGIN SOLUTION
    qk = tl.dot(q, tl.trans(k))
    p = recompute_p(qk, lse, qk_scale, query_idx, key_idx, ON_DIAGONAL)
    dp = tl.dot(do, tl.trans(v))
    ds = score_grad(p, dp, delta)
    dq = tl.dot((ds * sm_scale).to(k.dtype), k, dq)      # dQ += (scale dS) K
    ### END SOLUTION
    return dq

# %% nbgrader={"grade": false, "grade_id": "kernel", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.tma import is_hopper_or_newer, tile_descriptor, tma_ready
from autograder.validation import check_attention_inputs


# ---- the forward (problems 3 and 4): O and the natural-log LSE, causal or not ----------------

@triton.jit
def _key_blocks(start_m, seq_len, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr):
    """(hi1, hi2) for the query block start_m: the key blocks in [0, hi1) need no mask, those in
    [hi1, hi2) do. Causal (problem 4's stages): the keys before the block are seen by all its queries,
    the keys of its own span are the diagonal, the keys after it are never loaded. Non-causal
    (problem 3's): the whole blocks, then the tail block, whose keys past the end are masked."""
    if CAUSAL:
        hi1 = start_m * BLOCK_M
        hi2 = tl.minimum((start_m + 1) * BLOCK_M, seq_len)
    else:
        hi1 = (seq_len // BLOCK_N) * BLOCK_N
        hi2 = seq_len
    return hi1, hi2


@triton.jit
def _forward_step(acc, l_i, m_i, q, kt, v, offs_m, key_idx, seq_len, qk_scale, MASK: tl.constexpr,
                  CAUSAL: tl.constexpr):
    # One key block of the online softmax (problem 3's update, problem 4's diagonal mask).
    s = tl.dot(q, kt) * qk_scale
    if MASK:
        if CAUSAL:
            s = tl.where(key_idx[None, :] <= offs_m[:, None], s, float("-inf"))
        else:
            s = tl.where(key_idx[None, :] < seq_len, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return acc, l_i, m_new


@triton.jit
def _forward_block(acc, l_i, m_i, q, kt_ptrs, v_ptrs, stride_kn, stride_vn, start_n, offs_m, offs_n, seq_len,
                   qk_scale, MASK: tl.constexpr, CAUSAL: tl.constexpr):
    # The pointer kernel's key block: K loaded transposed, (HEAD_DIM, BLOCK_N), rows past the end as zeros.
    key_idx = start_n + offs_n
    if MASK:
        kt = tl.load(kt_ptrs + start_n * stride_kn, mask=key_idx[None, :] < seq_len, other=0.0)
        v = tl.load(v_ptrs + start_n * stride_vn, mask=key_idx[:, None] < seq_len, other=0.0)
    else:
        kt = tl.load(kt_ptrs + start_n * stride_kn)
        v = tl.load(v_ptrs + start_n * stride_vn)
    return _forward_step(acc, l_i, m_i, q, kt, v, offs_m, key_idx, seq_len, qk_scale, MASK=MASK, CAUSAL=CAUSAL)


@triton.jit
def _forward_kernel(
    Q, K, V, O, LSE,
    stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_ob, stride_oh, stride_om, stride_od,
    n_heads, seq_len, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
):
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = (off_bh // n_heads).to(tl.int64)
    off_h = (off_bh % n_heads).to(tl.int64)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=offs_m[:, None] < seq_len, other=0.0)
    kt_ptrs = K + off_b * stride_kb + off_h * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    v_ptrs = V + off_b * stride_vb + off_h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    hi1, hi2 = _key_blocks(start_m, seq_len, BLOCK_M, BLOCK_N, CAUSAL)
    for start_n in range(0, hi1, BLOCK_N):
        acc, l_i, m_i = _forward_block(acc, l_i, m_i, q, kt_ptrs, v_ptrs, stride_kn, stride_vn, start_n, offs_m,
                                       offs_n, seq_len, qk_scale, MASK=False, CAUSAL=CAUSAL)
    for start_n in range(hi1, hi2, BLOCK_N):
        acc, l_i, m_i = _forward_block(acc, l_i, m_i, q, kt_ptrs, v_ptrs, stride_kn, stride_vn, start_n, offs_m,
                                       offs_n, seq_len, qk_scale, MASK=True, CAUSAL=CAUSAL)
    o = acc / l_i[:, None]
    lse = (m_i + tl.math.log2(l_i)) * LN_2
    tl.store(O + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
             o.to(O.dtype.element_ty), mask=offs_m[:, None] < seq_len)
    tl.store(LSE + off_bh.to(tl.int64) * seq_len + offs_m, lse, mask=offs_m < seq_len)


@triton.jit
def _query_block_of_program(n_bh, seq_len, HEADS_PER_GROUP: tl.constexpr, BLOCK_M: tl.constexpr):
    # (off_bh, start_m) of this program, as in problem 4: the longest causal query blocks first, in
    # groups of heads, so that the short ones fill in at the end and a group's K/V stays in the L2.
    n_m = tl.cdiv(seq_len, BLOCK_M)
    pid = tl.program_id(0)
    group = pid // (n_m * HEADS_PER_GROUP)
    first_bh = group * HEADS_PER_GROUP
    heads_here = tl.minimum(HEADS_PER_GROUP, n_bh - first_bh)
    within = pid - group * n_m * HEADS_PER_GROUP
    return first_bh + within % heads_here, n_m - 1 - within // heads_here


@triton.jit
def _forward_kernel_tma(
    desc_q, desc_k, desc_v, desc_o, LSE, n_heads, n_bh, seq_len, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
    HEADS_PER_GROUP: tl.constexpr, OUT_DTYPE: tl.constexpr,
):
    # The same forward with its tiles fetched through tensor descriptors (Hopper and newer, as in
    # problems 3 and 4): one instruction per tile; rows past the end arrive as zeros.
    off_bh, start_m = _query_block_of_program(n_bh, seq_len, HEADS_PER_GROUP, BLOCK_M)
    off_b = off_bh // n_heads
    off_h = off_bh % n_heads
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    q = desc_q.load([off_b, off_h, start_m * BLOCK_M, 0]).reshape(BLOCK_M, HEAD_DIM)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    hi1, hi2 = _key_blocks(start_m, seq_len, BLOCK_M, BLOCK_N, CAUSAL)
    for start_n in range(0, hi1, BLOCK_N):
        k = desc_k.load([off_b, off_h, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        v = desc_v.load([off_b, off_h, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        acc, l_i, m_i = _forward_step(acc, l_i, m_i, q, k.T, v, offs_m, start_n + offs_n, seq_len, qk_scale,
                                      MASK=False, CAUSAL=CAUSAL)
    for start_n in range(hi1, hi2, BLOCK_N):
        k = desc_k.load([off_b, off_h, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        v = desc_v.load([off_b, off_h, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        acc, l_i, m_i = _forward_step(acc, l_i, m_i, q, k.T, v, offs_m, start_n + offs_n, seq_len, qk_scale,
                                      MASK=True, CAUSAL=CAUSAL)
    o = acc / l_i[:, None]
    lse = (m_i + tl.math.log2(l_i)) * LN_2
    desc_o.store([off_b, off_h, start_m * BLOCK_M, 0], o.to(OUT_DTYPE).reshape(1, 1, BLOCK_M, HEAD_DIM))
    tl.store(LSE + off_bh.to(tl.int64) * seq_len + offs_m, lse, mask=offs_m < seq_len)


# ---- the backward: the preprocess, then dK/dV per key block and dQ per query block ---------------

@triton.jit
def _preprocess_kernel(O, DO, DELTA, stride_ob, stride_oh, stride_om, stride_od,
                       stride_dob, stride_doh, stride_dom, stride_dod, n_heads, seq_len,
                       HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    # Delta_i = rowsum(dO_i * O_i) for BLOCK_M rows of one (batch, head).
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = (off_bh // n_heads).to(tl.int64)
    off_h = (off_bh % n_heads).to(tl.int64)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = offs_m[:, None] < seq_len
    o = tl.load(O + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
                mask=rows, other=0.0)
    do = tl.load(DO + off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_dom
                 + offs_d[None, :] * stride_dod, mask=rows, other=0.0)
    delta = softmax_delta(o, do)
    tl.store(DELTA + off_bh.to(tl.int64) * seq_len + offs_m, delta, mask=offs_m < seq_len)


@triton.jit
def _load_rows(ptrs, desc, off_b, off_h, start, stride, idx, seq_len, ROWS: tl.constexpr, HEAD_DIM: tl.constexpr,
               TMA: tl.constexpr):
    # ROWS positions from `start` of one (batch, head): through a tensor descriptor on Hopper (an
    # asynchronous copy the loop's pipeline overlaps with the previous step), else through pointers.
    # Either way, positions past the end arrive as zeros.
    if TMA:
        tile = desc.load([off_b.to(tl.int32), off_h.to(tl.int32), start, 0]).reshape(ROWS, HEAD_DIM)
    else:
        tile = tl.load(ptrs + start * stride, mask=idx[:, None] < seq_len, other=0.0)
    return tile


@triton.jit
def _dkdv_step(dk, dv, k, v, q_ptrs, do_ptrs, desc_q, desc_do, LSE, DELTA, DQ32, desc_dq32, off_b, off_h, row0,
               start_m, offs_m, offs_n, stride_qm, stride_dom, seq_len, qk_scale, sm_scale, HEAD_DIM: tl.constexpr,
               BLOCK_M: tl.constexpr, ON_DIAGONAL: tl.constexpr, TMA: tl.constexpr, DQ_ATOMICS: tl.constexpr):
    # One query block of a dK/dV program: its tiles, then your dkdv_update (or, with DQ_ATOMICS, the
    # same sums and this block's share of dQ).
    query_idx = start_m + offs_m
    q = _load_rows(q_ptrs, desc_q, off_b, off_h, start_m, stride_qm, query_idx, seq_len, BLOCK_M, HEAD_DIM, TMA)
    do = _load_rows(do_ptrs, desc_do, off_b, off_h, start_m, stride_dom, query_idx, seq_len, BLOCK_M, HEAD_DIM, TMA)
    lse = tl.load(LSE + row0 + query_idx, mask=query_idx < seq_len, other=0.0)
    delta = tl.load(DELTA + row0 + query_idx, mask=query_idx < seq_len, other=0.0)
    if DQ_ATOMICS:
        dk, dv = _dkdv_dq_update(dk, dv, q, k, v, do, lse, delta, qk_scale, sm_scale, query_idx, offs_n, DQ32,
                                 desc_dq32, off_b, off_h, row0, start_m, seq_len, HEAD_DIM, BLOCK_M, ON_DIAGONAL, TMA)
    else:
        dk, dv = dkdv_update(dk, dv, q, k, v, do, lse, delta, qk_scale, sm_scale, query_idx, offs_n, ON_DIAGONAL)
    return dk, dv


@triton.jit
def _dkdv_program(
    start_n, off_bh, Q, K, V, DO, DK, DV, DQ32, LSE, DELTA,
    stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd, stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    desc_q, desc_do, desc_dq32, n_heads, seq_len, qk_scale, sm_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, TMA: tl.constexpr,
    DQ_ATOMICS: tl.constexpr,
):
    # One program owns BLOCK_N keys of one (batch, head) and walks the query blocks that see them.
    # DQ_ATOMICS: it also adds each query block's share of dQ into DQ32 (_backward_kernel).
    off_b = (off_bh // n_heads).to(tl.int64)
    off_h = (off_bh % n_heads).to(tl.int64)
    row0 = off_bh.to(tl.int64) * seq_len
    offs_n = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    keys = offs_n[:, None] < seq_len
    k = tl.load(K + off_b * stride_kb + off_h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                mask=keys, other=0.0)
    v = tl.load(V + off_b * stride_vb + off_h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                mask=keys, other=0.0)
    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    do_ptrs = DO + off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    # Causal: the queries of the key block's own span are the diagonal (masked); the queries after
    # it see every key of the block; the queries before it see none and are never loaded.
    if CAUSAL:
        lo = start_n * BLOCK_N
        mid = tl.minimum(lo + BLOCK_N, seq_len)
    else:
        lo = 0
        mid = 0
    for start_m in range(lo, mid, BLOCK_M):   # the diagonal (causal only)
        dk, dv = _dkdv_step(dk, dv, k, v, q_ptrs, do_ptrs, desc_q, desc_do, LSE, DELTA, DQ32, desc_dq32, off_b, off_h,
                            row0, start_m, offs_m, offs_n, stride_qm, stride_dom, seq_len, qk_scale, sm_scale, HEAD_DIM,
                            BLOCK_M, ON_DIAGONAL=True, TMA=TMA, DQ_ATOMICS=DQ_ATOMICS)
    for start_m in range(mid, seq_len, BLOCK_M):   # every query sees every key of the block
        dk, dv = _dkdv_step(dk, dv, k, v, q_ptrs, do_ptrs, desc_q, desc_do, LSE, DELTA, DQ32, desc_dq32, off_b, off_h,
                            row0, start_m, offs_m, offs_n, stride_qm, stride_dom, seq_len, qk_scale, sm_scale, HEAD_DIM,
                            BLOCK_M, ON_DIAGONAL=False, TMA=TMA, DQ_ATOMICS=DQ_ATOMICS)
    tl.store(DK + off_b * stride_dkb + off_h * stride_dkh + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd,
             dk.to(DK.dtype.element_ty), mask=keys)
    tl.store(DV + off_b * stride_dvb + off_h * stride_dvh + offs_n[:, None] * stride_dvn + offs_d[None, :] * stride_dvd,
             dv.to(DV.dtype.element_ty), mask=keys)


@triton.jit
def _dq_program(
    start_m, off_bh, Q, K, V, DO, DQ, LSE, DELTA,
    stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    desc_k, desc_v, n_heads, seq_len, qk_scale, sm_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, TMA: tl.constexpr,
):
    # One program owns BLOCK_M queries of one (batch, head) and walks the key blocks they see.
    off_b = (off_bh // n_heads).to(tl.int64)
    off_h = (off_bh % n_heads).to(tl.int64)
    row0 = off_bh.to(tl.int64) * seq_len
    query_idx = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = query_idx[:, None] < seq_len
    q = tl.load(Q + off_b * stride_qb + off_h * stride_qh + query_idx[:, None] * stride_qm
                + offs_d[None, :] * stride_qd, mask=rows, other=0.0)
    do = tl.load(DO + off_b * stride_dob + off_h * stride_doh + query_idx[:, None] * stride_dom
                 + offs_d[None, :] * stride_dod, mask=rows, other=0.0)
    lse = tl.load(LSE + row0 + query_idx, mask=query_idx < seq_len, other=0.0)
    delta = tl.load(DELTA + row0 + query_idx, mask=query_idx < seq_len, other=0.0)
    k_ptrs = K + off_b * stride_kb + off_h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
    v_ptrs = V + off_b * stride_vb + off_h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    hi1, hi2 = _key_blocks(start_m, seq_len, BLOCK_M, BLOCK_N, CAUSAL)
    for start_n in range(0, hi1, BLOCK_N):   # whole key blocks, no mask
        if TMA:
            k = desc_k.load([off_b.to(tl.int32), off_h.to(tl.int32), start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
            v = desc_v.load([off_b.to(tl.int32), off_h.to(tl.int32), start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        else:
            k = tl.load(k_ptrs + start_n * stride_kn)
            v = tl.load(v_ptrs + start_n * stride_vn)
        dq = dq_update(dq, q, k, v, do, lse, delta, qk_scale, sm_scale, query_idx, start_n + offs_n,
                       ON_DIAGONAL=False)
    for start_n in range(hi1, hi2, BLOCK_N):   # the diagonal (causal) or the tail block (zeros past the end)
        key_idx = start_n + offs_n
        k = _load_rows(k_ptrs, desc_k, off_b, off_h, start_n, stride_kn, key_idx, seq_len, BLOCK_N, HEAD_DIM, TMA)
        v = _load_rows(v_ptrs, desc_v, off_b, off_h, start_n, stride_vn, key_idx, seq_len, BLOCK_N, HEAD_DIM, TMA)
        dq = dq_update(dq, q, k, v, do, lse, delta, qk_scale, sm_scale, query_idx, key_idx, ON_DIAGONAL=CAUSAL)
    tl.store(DQ + off_b * stride_dqb + off_h * stride_dqh + query_idx[:, None] * stride_dqm
             + offs_d[None, :] * stride_dqd, dq.to(DQ.dtype.element_ty), mask=rows)


@triton.jit
def _backward_kernel(
    Q, K, V, DO, DQ, DK, DV, LSE, DELTA,
    stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd, stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    desc_q, desc_do, desc_k, desc_v, desc_dq32, n_heads, seq_len, qk_scale, sm_scale, n_key_blocks,
    HEAD_DIM: tl.constexpr, BLOCK_M1: tl.constexpr, BLOCK_N1: tl.constexpr, BLOCK_M2: tl.constexpr,
    BLOCK_N2: tl.constexpr, CAUSAL: tl.constexpr, TMA: tl.constexpr, DQ_ATOMICS: tl.constexpr,
):
    # Programs 0 .. n_key_blocks - 1 of each (batch, head) own key blocks (dK, dV); the rest own query
    # blocks (dQ), the last query block first: with the causal mask it has the most keys to visit.
    # (desc_*: tensor descriptors of the tiles the loops stream, on Hopper; None otherwise.)
    # DQ_ATOMICS: FlashAttention-2's own layout (section 3), for long sequences at D <= 64 on Hopper.
    # There are only dK/dV programs; each also computes its share of every dQ block it sees and adds it
    # into DQ, a float32 buffer zeroed by the host: as whole tiles, by the TMA unit's bulk reductions
    # (desc_dq32), on Hopper; element by element elsewhere (the CPU interpreter). Its math is the
    # course's, not your functions': pass deterministic=True to run yours here too.
    pid = tl.program_id(0)
    off_bh = tl.program_id(1)
    # Two calls rather than one under `DQ_ATOMICS or pid < n_key_blocks`: Triton would compile that
    # condition at run time, and with it the dQ programs into the atomic kernel.
    if DQ_ATOMICS:
        _dkdv_program(pid, off_bh, Q, K, V, DO, DK, DV, DQ, LSE, DELTA,
                      stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
                      stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
                      stride_dkb, stride_dkh, stride_dkn, stride_dkd, stride_dvb, stride_dvh, stride_dvn, stride_dvd,
                      desc_q, desc_do, desc_dq32, n_heads, seq_len, qk_scale, sm_scale,
                      HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M1, BLOCK_N=BLOCK_N1, CAUSAL=CAUSAL, TMA=TMA, DQ_ATOMICS=True)
    elif pid < n_key_blocks:
        _dkdv_program(pid, off_bh, Q, K, V, DO, DK, DV, DQ, LSE, DELTA,
                      stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
                      stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
                      stride_dkb, stride_dkh, stride_dkn, stride_dkd, stride_dvb, stride_dvh, stride_dvn, stride_dvd,
                      desc_q, desc_do, None, n_heads, seq_len, qk_scale, sm_scale,
                      HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M1, BLOCK_N=BLOCK_N1, CAUSAL=CAUSAL, TMA=TMA, DQ_ATOMICS=False)
    else:
        _dq_program(tl.num_programs(0) - 1 - pid, off_bh, Q, K, V, DO, DQ, LSE, DELTA,
                    stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
                    stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
                    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
                    desc_k, desc_v, n_heads, seq_len, qk_scale, sm_scale,
                    HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M2, BLOCK_N=BLOCK_N2, CAUSAL=CAUSAL, TMA=TMA)


@triton.jit
def _dkdv_dq_update(dk, dv, q, k, v, do, lse, delta, qk_scale, sm_scale, query_idx, key_idx, DQ32, desc_dq32, off_b,
                    off_h, row0, start_m, seq_len, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                    ON_DIAGONAL: tl.constexpr, TMA: tl.constexpr):
    # dkdv_update's sums, and this query block's share of dQ added into the float32 buffer DQ32.
    # The transposed tile of section 4 (S^T = K Q^T: P^T and dS^T come out in the layout the dV and dK
    # dots take; only dS^T is transposed, for dQ). Written here rather than through your recompute_p
    # and score_grad, whose (queries, keys) tiles need two transposes: up to 7% slower on an H200.
    # Rows past the end carry q = dO = 0, so their dS is 0; keys past the end carry k = v = 0, so they
    # add nothing to dQ, and their dK and dV are never stored.
    p_t = tl.math.exp2(tl.dot(k, tl.trans(q)) * qk_scale - lse[None, :] * LOG2_E)
    if ON_DIAGONAL:
        p_t = tl.where(key_idx[:, None] <= query_idx[None, :], p_t, 0.0)
    dv = tl.dot(p_t.to(do.dtype), do, dv)                                     # dV += P^T dO
    ds_t = (p_t * (tl.dot(v, tl.trans(do)) - delta[None, :]) * sm_scale).to(q.dtype)
    dk = tl.dot(ds_t, q, dk)                                                  # dK += (scale dS)^T Q
    dq = tl.dot(tl.trans(ds_t), k)                                            # this key block's share of dQ
    if TMA:
        desc_dq32.atomic_add([off_b.to(tl.int32), off_h.to(tl.int32), start_m, 0], dq.reshape(1, 1, BLOCK_M, HEAD_DIM))
    else:   # DQ32 is contiguous
        tl.atomic_add(DQ32 + (row0 + query_idx)[:, None] * HEAD_DIM + tl.arange(0, HEAD_DIM)[None, :], dq,
                      mask=query_idx[:, None] < seq_len, sem="relaxed")
    return dk, dv


# Tiles: (forward: BLOCK_M, BLOCK_N, num_warps, num_stages; dK/dV: BLOCK_M1 queries per step, BLOCK_N1
# keys per program; dQ: BLOCK_M2 queries per program, BLOCK_N2 keys per step; the backward's num_warps,
# num_stages). BLOCK_N1 is a multiple of BLOCK_M1 and BLOCK_M2 of BLOCK_N2, so that a diagonal is a
# whole number of steps. Chosen on an H200 by scripts/tune_backward.py and scripts/tune_forward.py
# (docs/results/h200/problem7): at D <= 64, 64-query forward tiles; at D=128, an 8-warp forward; and
# square 64 x 64 backward steps (larger tiles spill at D=128; at D=64 the 128-key dK/dV programs that
# step 32 queries at a time are as fast through pointers and 5% slower through descriptors).
_GPU_CONFIGS = {(d, causal): (64, 64, 4, 3, 64, 64, 64, 64, 4, 3) for d in (16, 32, 64) for causal in (False, True)}
_GPU_CONFIGS.update({(128, causal): (128, 64, 8, 3, 64, 64, 64, 64, 4, 2) for causal in (False, True)})
# Hopper and newer, 16-bit inputs, enough work: the kernels fetch the tiles their loops stream through
# tensor descriptors, and the forward takes problem 4's Hopper tiles (128 x 128: 1.13-1.22x faster
# than its pointer tiles at L=16384 on an H200). A descriptor costs the host time at every launch
# (its tensor map is encoded anew): a forward took 133 us of host time instead of 70, a backward 228
# instead of 131. Below _TMA_MIN_WORK (B*H*L^2*D, halved when causal; 2^35 is B=4 H=16 L=4096 D=64
# causal) the GPU's part is too short to hide that, and the pointer kernels run.
_HOPPER_FORWARD = {16: (128, 64, 8, 3), 32: (128, 64, 8, 3), 64: (128, 128, 4, 3), 128: (128, 128, 8, 3)}
_TMA_MIN_WORK = 2 ** 35
_FLOAT32_D128_CONFIG = (64, 32, 4, 2, 32, 64, 64, 32, 4, 2)  # float32 tiles take twice the shared memory
_INTERPRETER_CONFIG = (32, 32, 4, 1, 16, 32, 32, 16, 4, 1)   # small tiles: several blocks at the CPU's small L


# Triton chose the interpreter or the GPU when this module's kernels were defined (the setup cell).
_INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


def launch_config(q, causal=False):
    """The tiles for this input: (BLOCK_M, BLOCK_N, forward num_warps, forward num_stages, BLOCK_M1,
    BLOCK_N1, BLOCK_M2, BLOCK_N2, backward num_warps, backward num_stages)."""
    if _INTERPRETING or q.device.type != "cuda":
        return _INTERPRETER_CONFIG
    if q.dtype == torch.float32:
        return _FLOAT32_D128_CONFIG if q.shape[-1] == 128 else _GPU_CONFIGS[q.shape[-1], bool(causal)]
    config = _GPU_CONFIGS[q.shape[-1], bool(causal)]
    return (*_HOPPER_FORWARD[q.shape[-1]], *config[4:]) if _large_on_hopper(q, causal) else config


def _large_on_hopper(q, causal):
    batch, n_heads, seq_len, head_dim = q.shape
    work = batch * n_heads * seq_len * seq_len * head_dim // (2 if causal else 1)
    return q.dtype != torch.float32 and work >= _TMA_MIN_WORK and is_hopper_or_newer(q)


def _tma(q, causal, *tensors):
    """Whether the kernels fetch tiles through tensor descriptors: a large 16-bit input on Hopper or
    newer, every tensor with aligned strides."""
    return _large_on_hopper(q, causal) and tma_ready(q, *tensors)


def _dq_atomics(q, tma, deterministic=None):
    """Whether the backward is FlashAttention-2's one kernel with dQ added up by atomics
    (_backward_kernel's DQ_ATOMICS): where the descriptors pay and D <= 64, unless the caller asks for
    gradients that are the same bit for bit from run to run (`deterministic`, by default
    torch.are_deterministic_algorithms_enabled()). At D = 128 the two kinds of program are as fast."""
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    return tma and q.shape[-1] <= 64 and not deterministic


# Heads per group of the TMA forward's launch order (_query_block_of_program), as in problem 4.
_HEADS_PER_GROUP = 8


def _check(q, k, v):
    check_attention_inputs(q, k, v, dtypes=(torch.float16, torch.bfloat16, torch.float32))
    if k.shape[2] != q.shape[2]:
        raise ValueError(f"this kernel needs as many keys as queries, got Lq={q.shape[2]}, Lk={k.shape[2]}")


def _check_do(q, do):
    if do.shape != q.shape or do.dtype != q.dtype or do.device != q.device:
        raise ValueError(f"do must be like q: shape {tuple(q.shape)}, {q.dtype}; got {tuple(do.shape)}, {do.dtype}")


def attention_forward(q, k, v, causal=False, config=None, tma=None):
    """(o, lse) of softmax(q k^T / sqrt(D)) v, causal or not; lse float32 (B, H, L) in natural log.
    For tuning: `config`, the tiles (launch_config's tuple; None: launch_config(q, causal)); `tma`,
    True or False for the descriptor or the pointer kernel (None: descriptors where they pay, `_tma`)."""
    _check(q, k, v)
    tma = _tma(q, causal, k, v) if tma is None else tma
    return _launch_forward(q, k, v, causal, config or launch_config(q, causal), tma)


def attention_backward(q, k, v, o, lse, do, causal=False, config=None, tma=None, dq_atomics=None):
    """(dq, dk, dv) from the forward's o and natural-log lse and the upstream gradient do.
    `config` and `tma` as for attention_forward; `dq_atomics`, True or False for the one kernel that
    adds dQ up by atomics or the two kinds of program (None: _dq_atomics)."""
    _check(q, k, v)
    _check_do(q, do)
    tma = _tma(q, causal, k, v, do) if tma is None else tma
    dq_atomics = _dq_atomics(q, tma) if dq_atomics is None else dq_atomics
    return _launch_backward(q, k, v, o, lse.contiguous(), do, causal, config or launch_config(q, causal), tma,
                            dq_atomics)


# The launches alone. A training step at a short length is launch-bound: the GPU finishes each kernel
# before Python has enqueued the next (docs/results/h200/problem7, "profile_step"), so the autograd
# function below checks its inputs and picks its tiles once, in the forward, and its backward only
# launches.
def _launch_forward(q, k, v, causal, config, tma):
    batch, n_heads, seq_len, head_dim = q.shape
    block_m, block_n, num_warps, num_stages, *_ = config
    o = torch.empty_like(q)
    lse = torch.empty((batch, n_heads, seq_len), device=q.device, dtype=torch.float32)
    if tma:
        grid = (triton.cdiv(seq_len, block_m) * batch * n_heads,)
        _forward_kernel_tma[grid](
            tile_descriptor(q, block_m), tile_descriptor(k, block_n), tile_descriptor(v, block_n),
            tile_descriptor(o, block_m), lse, n_heads, batch * n_heads, seq_len, LOG2_E.value / math.sqrt(head_dim),
            HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal, HEADS_PER_GROUP=_HEADS_PER_GROUP,
            OUT_DTYPE=tl.float16 if q.dtype == torch.float16 else tl.bfloat16,
            num_warps=num_warps, num_stages=num_stages)
        return o, lse
    grid = (triton.cdiv(seq_len, block_m), batch * n_heads)
    _forward_kernel[grid](q, k, v, o, lse, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
                          n_heads, seq_len, LOG2_E.value / math.sqrt(head_dim),
                          HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal,
                          num_warps=num_warps, num_stages=num_stages)
    return o, lse


def _launch_backward(q, k, v, o, lse, do, causal, config, tma, dq_atomics=False):
    batch, n_heads, seq_len, head_dim = q.shape
    *_, block_m1, block_n1, block_m2, block_n2, num_warps, num_stages = config
    sm_scale = 1.0 / math.sqrt(head_dim)
    delta = torch.empty((batch, n_heads, seq_len), device=q.device, dtype=torch.float32)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    _preprocess_kernel[(triton.cdiv(seq_len, block_m2), batch * n_heads)](
        o, do, delta, *o.stride(), *do.stride(), n_heads, seq_len, HEAD_DIM=head_dim, BLOCK_M=block_m2)
    n_key_blocks = triton.cdiv(seq_len, block_n1)
    # The kernel writes dQ into `written`: dq itself, or with atomics a float32 buffer it adds into.
    written = torch.zeros(q.shape, device=q.device, dtype=torch.float32) if dq_atomics else dq
    query_programs = 0 if dq_atomics else triton.cdiv(seq_len, block_m2)
    # The tiles the loops stream: q and do (dK/dV steps), k and v (dQ steps), and the dQ buffer.
    streamed = (tile_descriptor(q, block_m1), tile_descriptor(do, block_m1),
                *((None, None, tile_descriptor(written, block_m1)) if dq_atomics else
                  (tile_descriptor(k, block_n2), tile_descriptor(v, block_n2), None))) if tma else (None,) * 5
    _backward_kernel[(n_key_blocks + query_programs, batch * n_heads)](
        q, k, v, do, written, dk, dv, lse, delta,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *written.stride(), *dk.stride(), *dv.stride(),
        *streamed, n_heads, seq_len, sm_scale * LOG2_E.value, sm_scale, n_key_blocks,
        HEAD_DIM=head_dim, BLOCK_M1=block_m1, BLOCK_N1=block_n1, BLOCK_M2=block_m2, BLOCK_N2=block_n2,
        CAUSAL=causal, TMA=tma, DQ_ATOMICS=dq_atomics, num_warps=num_warps, num_stages=num_stages)
    return (dq.copy_(written) if dq_atomics else dq), dk, dv


class FlashAttention(torch.autograd.Function):
    """The forward kernel and your backward as one differentiable PyTorch function."""

    @staticmethod
    def forward(ctx, q, k, v, causal, deterministic):
        _check(q, k, v)
        ctx.config = launch_config(q, causal)
        o, lse = _launch_forward(q, k, v, causal, ctx.config, _tma(q, causal, k, v))
        ctx.save_for_backward(q, k, v, o, lse)   # O(L) memory: no L x L matrix is kept
        ctx.causal = causal
        ctx.deterministic = deterministic
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors      # checked by the forward
        _check_do(q, do)
        tma = _tma(q, ctx.causal, k, v, do)
        dq, dk, dv = _launch_backward(q, k, v, o, lse, do, ctx.causal, ctx.config, tma,
                                      _dq_atomics(q, tma, ctx.deterministic))
        return dq, dk, dv, None, None


def flash_attention(q, k, v, causal=False, deterministic=None):
    """Attention you can train with: `flash_attention(q, k, v).sum().backward()` runs your kernels.
    deterministic=True keeps the backward to the two kinds of program, whose gradients are the same
    bit for bit from run to run (None: torch.are_deterministic_algorithms_enabled())."""
    return FlashAttention.apply(q, k, v, causal, deterministic)


def flash_attention_grads(q, k, v, do, causal=False, deterministic=None):
    """(dq, dk, dv): the gradients of sum(flash_attention(q, k, v, causal) * do), through autograd
    as a training step computes them. What the checks call."""
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    with torch.enable_grad():
        o = flash_attention(q, k, v, causal, deterministic)
        return torch.autograd.grad(o, (q, k, v), do)


flash_attention_grads.launch_config = launch_config   # the checks read the tile sizes from here

# %% [markdown]
# ### Check as you go, and a hint when you are stuck
#
# Run the next cell after every change to your cell (run the *Your code* cell and the kernel cell
# again first). It calls `flash_attention_grads` on the visible shapes of section 5, one non-causal and
# one causal, and compares $dQ$, $dK$ and $dV$ with float64 autograd of the reference attention. For a
# wrong case it says which gradients are wrong, where the first one first goes wrong (batch, head, and
# the query for $dQ$ or the key for $dK$, $dV$), and the likely cause: the checks re-enact the typical
# mistakes of a backward in float64 and name the one your gradients match.
#
# If you are stuck, the cell after it is a hint ladder: each run reveals one more step, two nudges first
# and then the idea in words (never the code). `hint("problem7", 1)` shows a step again.

# %% nbgrader={"grade": false, "grade_id": "self_check", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem7 import check

check(flash_attention_grads)  # the visible shapes, with the grader's diagnosis when one is wrong

# %% nbgrader={"grade": false, "grade_id": "hints", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.hints import hint

hint("problem7");  # each run reveals the next step

# %% [markdown]
# ## 5. Check your work
#
# Each check prints one line per test input: `PASS` or `FAIL`, the largest error of each gradient
# against float64 autograd of the reference attention (on the same 16-bit inputs and the same $dO$),
# and for a failure which gradients are wrong, where, and the most likely cause. The tolerance is 16
# units in the last place of the dtype ($8\cdot10^{-3}$ for float16 and float32, whose GPU matmuls
# run in TF32; $6.4\cdot10^{-2}$ for bfloat16), absolute and relative: looser than the forward's 4,
# because the backward rounds $P$ and $dS$ to 16 bits before four matmuls and sums $L$ terms into each
# $dQ$ and $dK$ element. The reference kernels stay within a third of it; every typical mistake lands
# far outside.

# %% nbgrader={"grade": true, "grade_id": "test_noncausal", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem7 import assert_backward_cases

# Non-causal: several key and query blocks, the last one partial; dQ, dK and dV.
assert_backward_cases(flash_attention_grads, [Case(1, 2, 64, 32, seed=1), Case(2, 1, 80, 16, seed=3)])

# %% nbgrader={"grade": true, "grade_id": "test_causal", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem7 import assert_backward_cases

# Causal: the diagonal tiles are masked, the tiles above them never visited.
assert_backward_cases(flash_attention_grads, [Case(1, 2, 80, 16, seed=2, causal=True),
                                              Case(1, 1, 64, 32, seed=4, causal=True)])

# %% [markdown]
# ### What the grader also checks
#
# The cells below hold tests you cannot see. They check, in this order: sequence lengths that are not
# multiples of the tiles (a single token, fewer tokens than one tile, one past a tile), causal and not;
# several batches and heads, every head dimension from 16 to 128, bfloat16 (on a GPU), float16 and
# float32; and inputs and upstream gradients that are not contiguous in memory (a model's
# `(B, L, H, D)` projections, a strided head dimension). If the visible checks pass and your functions
# follow section 2, these will too.

# %% nbgrader={"grade": true, "grade_id": "test_hidden_lengths", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem7 import assert_backward_cases

# Hidden: sequence lengths that are not multiples of the tiles, causal and not.
### BEGIN HIDDEN TESTS
assert_backward_cases(flash_attention_grads, [
    Case(1, 1, 1, 16, seed=10),
    Case(1, 1, 1, 32, seed=11, causal=True),
    Case(2, 2, 17, 32, seed=12, causal=True),
    Case(2, 1, 33, 16, seed=13),
    Case(1, 2, 47, 16, seed=14, causal=True),
])
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_shapes_dtypes", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem7 import assert_backward_cases

# Hidden: several batches and heads, every head dimension, bfloat16 (on a GPU), float16 and float32.
### BEGIN HIDDEN TESTS
assert_backward_cases(flash_attention_grads, [
    Case(2, 3, 24, 16, seed=20, causal=True),
    Case(1, 2, 48, 64, "bfloat16", seed=21, causal=True),
    Case(1, 1, 40, 128, seed=22),
    Case(1, 1, 36, 128, "bfloat16", seed=23),
    Case(1, 2, 50, 32, "float32", seed=24, causal=True),
    Case(2, 1, 40, 64, "float32", seed=25),
])
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_layouts", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem7 import assert_backward_cases

# Hidden: inputs and upstream gradients that are not contiguous in memory.
### BEGIN HIDDEN TESTS
assert_backward_cases(flash_attention_grads, [
    Case(2, 2, 40, 32, "float16", "bshd", seed=30, causal=True),
    Case(1, 2, 48, 16, "float16", "strided_d", seed=31),
    Case(1, 2, 40, 32, "float16", grad_layout="bshd", seed=32),
    Case(1, 2, 33, 16, "float16", grad_layout="strided_d", seed=33, causal=True),
    Case(1, 1, 48, 64, "bfloat16", "bshd", grad_layout="strided_d", seed=34, causal=True),
])
### END HIDDEN TESTS

# %% [markdown]
# ## 6. How fast is it?
#
# On a GPU the next cell times a training step's attention, forward + backward, and the backward alone,
# against PyTorch's `scaled_dot_product_attention` with its FlashAttention-2 backend pinned, causal and
# not, with `triton.testing.do_bench` medians. `your kernels` is `flash_attention` as a training step
# calls it; `your kernels, deterministic` passes `deterministic=True`, so that on a Hopper GPU the long
# sequences at $D = 64$ run your five functions rather than the one-kernel layout of section 3. TFLOPS count $4BHL^2D$ for the forward and $2.5\times$
# that for the backward, halved when causal. On the CPU interpreter there is nothing meaningful to
# time, and the cell says so.

# %% nbgrader={"grade": false, "grade_id": "benchmark", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem7 import benchmark

benchmark(flash_attention)

# %% [markdown]
# ### Performance points (2 of the 12)
#
# The last graded cell times `flash_attention_grads` (the course's forward and your backward) against
# the course's reference kernels, on the same GPU, in the same run, on the same inputs (causal,
# B=4 H=16 L=4096 D=64 in float16), taking turns over several rounds: the grade is the **ratio** of
# the two times. A ratio of at most 1.3 earns both points, at most 1.6 one point, anything slower
# none; a kernel that fails the self-check earns none, however fast. Under the CPU interpreter (no GPU)
# the ratio measures how much work your kernels do rather than how fast a GPU would run them. Without
# the course's `solutions/` folder (a learner's install) the cell only says that it is measured at
# grading time.

# %% nbgrader={"grade": true, "grade_id": "test_performance", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem7 import performance_points

# Performance: forward + your backward over the reference kernels' time, on the same GPU in the same run.
# Ratio <= 1.3 earns both points, <= 1.6 one; a kernel that fails the self-check earns none.
# Under the CPU interpreter the ratio measures how much work the kernels do, not GPU speed.
performance_points(flash_attention_grads)

# %% [markdown] nbgrader={"grade": false, "grade_id": "outro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 7. What you built, and what comes next
#
# `flash_attention(q, k, v, causal)` is now a differentiable attention with $O(L)$ memory in both
# directions: the forward keeps $O$ and one LSE per row, the backward rebuilds each tile of $P$ from
# them, reduces the softmax's row coupling to $\Delta = \operatorname{rowsum}(dO \circ O)$, and splits
# the work so that every gradient block has exactly one writer. The next problem does the same for
# grouped-query attention with sliding windows and sinks, where a K/V head's gradient is the sum over
# the query heads of its group and the mask decides which tiles exist at all.
