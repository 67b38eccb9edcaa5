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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/flash-attention-course/flash-attention-course/blob/main/notebooks/problem8/problem8.ipynb)
#
# Runs in Colab (GPU or CPU), on a laptop without a GPU, or on a GPU machine: [how to start, and what each can do](https://github.com/flash-attention-course/flash-attention-course/blob/main/README.md#start).

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Problem 8 · The backward of grouped-query attention with sliding windows and sinks
#
# Problem 6 made the forward of a long-context attention layer cost $O\bigl(L(W+S)\bigr)$: a causal
# sliding window of $W$ keys, $S$ attention sinks, and $K$/$V$ heads shared by groups of query heads.
# Problem 7 wrote the FlashAttention-2 backward, but for masks that hide nothing below the diagonal:
# it walks every tile there, $O(L^2)$ work. A model trained with windows needs a backward that skips
# what the forward skipped, and that returns one $dK$ and one $dV$ per **shared** K/V head. This
# chapter is that backward.
#
# **You will learn** why the gradient of a shared K/V head is a sum over the query heads of its
# group, how to compute that sum without copying $K$ and $V$ and without atomics, why the mask must be
# applied again when $P$ is rebuilt, and which blocks of *queries* a block of *keys* needs under a
# window and sinks: problem 6's question turned around.
#
# **How this notebook works.** Run the cells from the top. The first code cell installs the course
# when it is missing (in Colab) and picks the GPU, or Triton's CPU interpreter when there is no GPU
# that Triton supports. You edit one cell, marked *Your code*: seven small `@triton.jit` functions,
# five of them problem 7's with the new mask. The forward (problem 6's kernel), the backward kernels,
# their loops and loads are given. The self-check after the kernel cell says which gradient is wrong,
# where, and why; a hint cell reveals one step at a time; the check cells of section 6 earn the
# points, and the grader runs more of the same kind on inputs you do not see.

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
# ## 1. What the backward of a windowed, grouped layer has to do
#
# Take one layer of a model such as Mistral: $H_q = 32$ query heads share $H_{kv} = 8$ K/V heads
# (groups of $G = 4$), every query sees a window of $W = 4096$ keys, and a few sink tokens stay
# visible to all. Training it on $L = 32\,768$ tokens calls the forward once and the backward once per
# step. Two things can go wrong with a backward borrowed from problem 7:
#
# * **The work.** Problem 7's kernels walk every tile below the diagonal: $L^2/2$ scores per head, of
#   which a window keeps about $LW$. At $L = 8W$ that is four times the work the mask allows, and the
#   ratio grows with $L$. The backward costs $2.5\times$ the forward already (five matmuls per tile
#   against two); it must skip the same tiles.
# * **The memory.** Grouped-query attention exists to keep $K$ and $V$ (and the inference cache) $G$
#   times smaller. The easy backward repeats each K/V head $G$ times, runs the ordinary backward on
#   $H_q$ heads, then adds the $G$ copies of $dK$ and $dV$: it materialises $2G$ times the K/V memory
#   the layer was designed to save, every step. The kernel has to read $K$ and $V$ in place and add
#   the group's gradients itself.
#
# Everything else carries over from problem 7: the forward saves $O$ and the natural-log
# $\mathrm{LSE}$, the backward rebuilds $P$ tile by tile, a preprocess computes
# $\Delta = \operatorname{rowsum}(dO \circ O)$, and one launch holds two kinds of program: those that
# own blocks of keys ($dK$, $dV$) and those that own blocks of queries ($dQ$).

# %% [markdown]
# ## 2. The math: the group sum and the mask in the recompute
#
# **The group sum.** Query head $h$ reads K/V head $g = h \,/\!/\, G$ (problem 5). With
# $\sigma = 1/\sqrt{D}$ and the mask $M$ of problem 6,
#
# $$S^{(h)} = \sigma\, Q_h K_g^\top, \qquad P^{(h)} = \operatorname{softmax}\bigl(S^{(h)} \text{ with } -\infty \text{ where } M = 0\bigr), \qquad O_h = P^{(h)} V_g .$$
#
# $K_g$ and $V_g$ enter the loss through **every** head of the group, so by the chain rule their
# gradients are sums over the group, while each query head keeps its own $dQ$:
#
# $$dV_g = \sum_{h:\, h /\!/ G = g} P^{(h)\top} dO_h, \qquad
# dK_g = \sum_{h:\, h /\!/ G = g} \sigma\, dS^{(h)\top} Q_h, \qquad
# dQ_h = \sigma\, dS^{(h)} K_g ,$$
#
# with problem 7's $dS^{(h)} = P^{(h)} \circ \bigl(dP^{(h)} - \Delta^{(h)}\bigr)$,
# $dP^{(h)} = dO_h V_g^\top$ and $\Delta^{(h)} = \operatorname{rowsum}(dO_h \circ O_h)$. It is the same
# sum autograd computes through PyTorch's `repeat_interleave`, whose backward adds the $G$ copies; here
# the kernel adds them while they are still in registers. A dK/dV program owns one block of keys of one
# K/V head: it loads $K_g$, $V_g$ once, then for each of the $G$ query heads $g G, \dots, gG + G - 1$
# walks that head's query blocks, adding into the same $dK$, $dV$ accumulators. It stores them once.
# No copy of $K$ or $V$, no atomics, and the same order of additions on every run.
#
# **The mask, again.** The forward's $\mathrm{LSE}_i$ runs over the keys query $i$ may see. Rebuilding
# $P_{ij} = e^{S_{ij} - \mathrm{LSE}_i}$ gives a positive number for *every* key, hidden ones
# included: $e^{S - \mathrm{LSE}}$ knows nothing about the mask. So the recompute must zero $P$ where
# $M_{ij} = 0$, with exactly the forward's rule: the window $i - (W-1) \le j \le i$ *or* a sink
# $j < S$ with $j \le i$. Forget the window, and keys far behind the query leak gradient; forget the
# sinks, and the sink keys lose theirs. Once $P$ is right, $dS = P \circ (dP - \Delta)$ is zero where
# $P$ is, and nothing else changes.

# %% [markdown]
# ## 3. Which query blocks a key block needs
#
# Problem 6 asked which **keys** a block of queries sees. The dK/dV program asks the transpose: which
# **queries** see a block of keys? Read the mask by columns. Key $j$ is seen by query $i$ when $j \le i$
# and either $i \le j + W - 1$ (the key is inside $i$'s window) or $j < S$ (a sink). So
#
# * every key is seen by the $W$ queries $j, j+1, \dots, j + W - 1$ (its own position first): a band
#   that runs **down** from the diagonal;
# * a sink is seen, in addition, by **every** later query, to the end of the sequence.
#
# For the keys $k_{\text{start}} \le j < k_{\text{end}}$ of one program
# ($k_{\text{end}} = \min(k_{\text{start}} + \texttt{BLOCK\_N}, L)$) the queries that see some key form
# the range $[\,k_{\text{start}},\ \min(k_{\text{end}} - 1 + W,\, L)\,)$, the **window loop**, and
# when the block holds a sink ($k_{\text{start}} < S$) every query after that as well, the **sink
# loop**. In blocks of `BLOCK_M` queries: the window loop starts at the block holding
# $k_{\text{start}}$ (rounded *down*) and runs while the block start is below the window's end; the
# sink loop starts at the first block the window loop did not visit (rounded *up*) and runs to $L$.
# Start the sink loop any earlier and the window's blocks are visited twice: each visit adds its
# $P^\top dO$ to $dV$ again, and the gradient of the sinks comes out twice as large, with no error and
# no NaN.
#
# Per program and query head that is at most $\lceil (W + \texttt{BLOCK\_N} - 1)/\texttt{BLOCK\_M}\rceil + 1$
# window blocks, independent of $L$, and only the $\lceil S/\texttt{BLOCK\_N}\rceil$ programs whose
# keys hold sinks walk on to the end: together $O\bigl(L(W + S)\bigr)$, like the forward. The dQ
# program walks a row: exactly the key blocks the forward's program walked (the sinks, then the
# window), which the given kernel computes as problem 6 did.
#
# Both kinds share one launch after the preprocess, as in problem 7 (neither needs the other's result):
# the first programs own the key blocks of every (batch, K/V head), the rest the query blocks of every
# (batch, query head). A GPU starts programs roughly in the order of their numbers, and a long program
# that starts last keeps the whole launch waiting, so the longest come first: the dK/dV programs, which
# walk the query blocks of $G$ heads, before the dQ programs, which walk the key blocks of one; and key
# block 0 of every batch and K/V head, whose sinks take its programs to the end of the sequence, before
# key block 1.
#
# The picture shows both on the grader's own mask ($L = 320$, $W = 72$, $S = 4$, $64 \times 64$
# tiles): on the left, one dK/dV program's column (key block 1 has no sink: a short band; key block 0
# holds the sinks: it runs to the end); on the right, one dQ program's row. **M** marks a tile where
# the recompute applies the mask, **1** a whole tile, where every query sees every key and the kernel
# skips the mask. The given kernels make that split themselves; your functions decide which tiles are
# visited at all.
#
# (The given forward and dQ walk are problem 6's kernel: this problem opens after problem 6's answers
# are in.)

# %% nbgrader={"grade": false, "grade_id": "plot_programs", "locked": true, "schema_version": 3, "solution": false, "task": false}
import matplotlib.pyplot as plt

from autograder.problems.problem8 import plot_backward_programs

plot_backward_programs(seq_len=320, window=72, sink=4, block=64, key_blocks=(0, 1), query_block=3)
plt.show()

# %% [markdown]
# ## 4. Your code
#
# The kernels below your cell load the tiles and call **your** functions. Five are problem 7's, now
# with the window and sinks in the mask; two are new:
#
# * `softmax_delta(o, do)`: the preprocess's $\Delta_i = \sum_d O_{id}\, dO_{id}$ for a block of rows,
#   in float32 (problem 7's).
# * `recompute_p(qk, lse, qk_scale, query_idx, key_idx, window_size, sink_size, MASKED)`: $P$ of one
#   tile from the raw dot products and the natural-log LSE, in base 2 as in problem 7; when `MASKED` is
#   true, $P = 0$ wherever section 2's mask hides the key.
# * `score_grad(p, dp, delta)`: $dS = P \circ (dP - \Delta)$ (problem 7's).
# * `dkdv_update(...)` and `dq_update(...)`: one tile's contribution to $dK$, $dV$ or to $dQ$, with the
#   softmax scale where it belongs (problem 7's, with the window and sink sizes passed through).
# * `query_block_ranges(k_start, seq_len, window_size, sink_size, BLOCK_M, BLOCK_N)`: section 3's two
#   loops as `(window_lo, window_hi, sink_lo)`. The kernel visits the query blocks that start at
#   `window_lo, window_lo + BLOCK_M, ...` below `window_hi`, then those at `sink_lo, sink_lo + BLOCK_M, ...`
#   below `seq_len`. `window_lo` and `sink_lo` must be multiples of `BLOCK_M`; an empty sink loop is
#   `sink_lo = seq_len`. `tl.minimum`, `tl.maximum`, `tl.cdiv(a, b)` ($\lceil a/b \rceil$) and
#   `tl.where(c, a, b)` work on these integers.
# * `group_heads(kv_head, group_size)`: the query heads whose gradients the dK/dV program of K/V head
#   `kv_head` sums, as `(first, end)`: the loop runs over `first, ..., end - 1`.
#
# The dK/dV programs count the tiles they visit (pass `_visits=dict()` to
# `flash_attention_grads` to see the counts), and the grader compares them with the tiles that hold a
# visible pair: the right gradients from too many tiles earn the gradient points but not the visit
# points. Inputs past the end of the sequence are loaded as zeros and contribute nothing.
#
# Keep the cell to `@triton.jit` functions (and constants, if you want any): no imports, no other
# statements. When grading, the tests run in a fresh interpreter that holds only the course's cells and
# this one, not in this notebook: their verdicts are your points, and your feedback shows them under
# each test cell. Do not call PyTorch's attention, softmax or matmul
# anywhere. On the CPU interpreter everything runs in float16, because bfloat16 `tl.dot` gives wrong
# results there (a known interpreter bug); on a GPU the checks use bfloat16 too.

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
def recompute_p(qk, lse, qk_scale, query_idx, key_idx, window_size, sink_size, MASKED: tl.constexpr):
    """The probabilities P of one tile, rebuilt from the forward's log-sum-exp.

    qk         (BLOCK_M, BLOCK_N) float32  raw dot products q . k (not yet scaled)
    lse        (BLOCK_M,)         float32  the forward's log-sum-exp of each query row, NATURAL log
    qk_scale                      float32  softmax_scale * log2(e) = log2(e) / sqrt(D)
    query_idx  (BLOCK_M,)         int32    position of each query in the sequence
    key_idx    (BLOCK_N,)         int32    position of each key in the sequence
    window_size, sink_size                 the mask of section 2: query i sees keys i - (W - 1) .. i
                                           and the sinks j < S with j <= i
    MASKED: False only for tiles whose every key is visible to every query (no mask needed)

    Returns P (BLOCK_M, BLOCK_N) float32: exp(qk * softmax_scale - lse), 0 where the mask hides the key.
    """
    ### BEGIN SOLUTION
    p = tl.math.exp2(qk * qk_scale - lse[:, None] * LOG2_E)
    if MASKED:
        i = query_idx[:, None]
        j = key_idx[None, :]
        seen = (j <= i) & ((j > i - window_size) | (j < sink_size))
        p = tl.where(seen, p, 0.0)
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
def dkdv_update(dk, dv, q, k, v, do, lse, delta, qk_scale, sm_scale, query_idx, key_idx, window_size, sink_size,
                MASKED: tl.constexpr):
    """Add one block of queries' contribution (of one query head) to this program's dK and dV.

    dk, dv     (BLOCK_N, HEAD_DIM) float32  the sums so far
    q, do      (BLOCK_M, HEAD_DIM) 16-bit   queries and output gradients of this query block
    k, v       (BLOCK_N, HEAD_DIM) 16-bit   this program's keys and values
    lse, delta (BLOCK_M,)          float32  the forward's natural-log LSE and the preprocess's Delta
    sm_scale = 1/sqrt(D); qk_scale = sm_scale * log2(e)

    Returns the updated (dk, dv).
    """
    ### BEGIN SOLUTION
    qk = tl.dot(q, tl.trans(k))
    p = recompute_p(qk, lse, qk_scale, query_idx, key_idx, window_size, sink_size, MASKED=MASKED)
    dv = tl.dot(tl.trans(p.to(do.dtype)), do, dv)        # dV += P^T dO
    dp = tl.dot(do, tl.trans(v))                         # dP = dO V^T
    ds = score_grad(p, dp, delta)
    dk = tl.dot(tl.trans((ds * sm_scale).to(q.dtype)), q, dk)   # dK += (scale dS)^T Q
    ### END SOLUTION
    return dk, dv


@triton.jit
def dq_update(dq, q, k, v, do, lse, delta, qk_scale, sm_scale, query_idx, key_idx, window_size, sink_size,
              MASKED: tl.constexpr):
    """Add one block of keys' contribution to the dQ of this program's block of queries.

    dq         (BLOCK_M, HEAD_DIM) float32  the sum so far
    q, do      (BLOCK_M, HEAD_DIM) 16-bit   this program's queries and output gradients
    k, v       (BLOCK_N, HEAD_DIM) 16-bit   keys and values of this key block
    lse, delta (BLOCK_M,)          float32

    Returns the updated dq.
    """
    ### BEGIN SOLUTION
    qk = tl.dot(q, tl.trans(k))
    p = recompute_p(qk, lse, qk_scale, query_idx, key_idx, window_size, sink_size, MASKED=MASKED)
    dp = tl.dot(do, tl.trans(v))
    ds = score_grad(p, dp, delta)
    dq = tl.dot((ds * sm_scale).to(k.dtype), k, dq)      # dQ += (scale dS) K
    ### END SOLUTION
    return dq


@triton.jit
def query_block_ranges(k_start, seq_len, window_size, sink_size, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Which query blocks the dK/dV program of keys k_start .. k_start + BLOCK_N - 1 visits.

    Returns (window_lo, window_hi, sink_lo). The kernel then visits the query blocks that start at
        window_lo, window_lo + BLOCK_M, ...  below window_hi  (the window loop), and
        sink_lo, sink_lo + BLOCK_M, ...      below seq_len    (the sink loop).
    Both loops start on a multiple of BLOCK_M. Together they must cover every query that sees
    some key of this block, visit no query block twice, and visit no block without such a query.
    """
    ### BEGIN SOLUTION
    k_end = tl.minimum(k_start + BLOCK_N, seq_len)            # one past the block's last real key
    window_lo = (k_start // BLOCK_M) * BLOCK_M                # the first key is seen by itself first
    window_hi = tl.minimum(k_end - 1 + window_size, seq_len)  # the last query whose window holds the last key
    after_window = tl.cdiv(window_hi, BLOCK_M) * BLOCK_M      # the first block the window loop does not visit
    sink_lo = tl.where(k_start < sink_size, after_window, seq_len)  # later queries see only the sinks
    ### END SOLUTION
    return window_lo, window_hi, sink_lo


@triton.jit
def group_heads(kv_head, group_size):
    """The query heads that read K/V head kv_head (grouped-query attention: query head h reads
    K/V head h // group_size). Returns (first, end): the dK/dV program sums the heads first .. end - 1."""
    ### BEGIN SOLUTION
    first = kv_head * group_size
    end = first + group_size
    ### END SOLUTION
    return first, end

# %% nbgrader={"grade": false, "grade_id": "kernel", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.validation import check_attention_inputs


# ---- the forward (problem 6's kernel, given): O and the natural-log LSE over the visible keys ----

@triton.jit
def _visible(q_idx, k_idx, window_size, sink_size):
    # The forward's mask (section 2): causal, and inside the window or a sink.
    i = q_idx[:, None]
    j = k_idx[None, :]
    return (j <= i) & ((j > i - window_size) | (j < sink_size))


@triton.jit
def _key_ranges(q_start, seq_len, window_size, sink_size, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # The key blocks the queries q_start .. q_start + BLOCK_M - 1 see: (sink_hi, window_lo, window_hi),
    # for the forward and the dQ program. The sink loop visits the blocks below min(sink_hi, window_lo),
    # the window loop those from window_lo to the last query's own key.
    q_end = tl.minimum(q_start + BLOCK_M, seq_len)
    window_lo = tl.maximum(q_start + 1 - window_size, 0) // BLOCK_N * BLOCK_N
    sink_hi = tl.minimum(window_lo, tl.minimum(sink_size, q_end))
    return sink_hi, window_lo, q_end


@triton.jit
def _segments(q_start, seq_len, window_size, sink_size, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # The key ranges cut into five segments: (0, sink_full, sink_hi) for the sinks and (window_lo,
    # full_lo, full_hi, window_hi) for the window; the blocks of [0, sink_full) and [full_lo, full_hi)
    # are seen whole by every query of the block (problem 6's kernel).
    sink_hi, window_lo, window_hi = _key_ranges(q_start, seq_len, window_size, sink_size, BLOCK_M, BLOCK_N)
    sink_full = tl.minimum(tl.minimum(sink_size // BLOCK_N, (q_start + 1) // BLOCK_N) * BLOCK_N, sink_hi)
    sink_full = tl.maximum(sink_full, 0)
    full_lo = tl.cdiv(tl.maximum(q_start + BLOCK_M - window_size, 0), BLOCK_N) * BLOCK_N
    full_lo = tl.minimum(tl.maximum(full_lo, window_lo), tl.maximum(window_hi, window_lo))
    full_hi = tl.minimum(tl.maximum(((q_start + 1) // BLOCK_N) * BLOCK_N, full_lo), tl.maximum(window_hi, full_lo))
    return sink_full, sink_hi, window_lo, full_lo, full_hi, window_hi


@triton.jit
def _forward_blocks(acc, l_i, m_i, q, kt_ptrs, v_ptrs, stride_kn, stride_vn, q_idx, lo, hi, seq_len,
                    window_size, sink_size, qk_scale, BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    # Problem 6's online softmax over the key blocks lo, lo + BLOCK_N, ... below hi. A row with no
    # visible key yet keeps 0 as its reference point, so that it stays empty instead of NaN.
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        key_idx = start_n + offs_n
        in_seq = key_idx < seq_len
        kt = tl.load(kt_ptrs + start_n * stride_kn, mask=in_seq[None, :], other=0.0)
        v = tl.load(v_ptrs + start_n * stride_vn, mask=in_seq[:, None], other=0.0)
        s = tl.dot(q, kt) * qk_scale
        if MASKED:
            s = tl.where(_visible(q_idx, key_idx, window_size, sink_size), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.math.exp2(m_i - m_ref)
        p = tl.math.exp2(s - m_ref[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _forward_kernel(
    Q, K, V, O, LSE,
    stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_ob, stride_oh, stride_om, stride_od,
    n_heads, group_size, seq_len, window_size, sink_size, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # One program: BLOCK_M query rows of one (batch, query head), reading K/V head h // group_size.
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = (off_bh // n_heads).to(tl.int64)
    off_h = (off_bh % n_heads).to(tl.int64)
    off_kv = off_h // group_size
    q_start = start_m * BLOCK_M
    q_idx = q_start + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + off_b * stride_qb + off_h * stride_qh + q_idx[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=q_idx[:, None] < seq_len, other=0.0)
    kt_ptrs = K + off_b * stride_kb + off_kv * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    v_ptrs = V + off_b * stride_vb + off_kv * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    sink_full, sink_hi, window_lo, full_lo, full_hi, window_hi = _segments(
        q_start, seq_len, window_size, sink_size, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _forward_blocks(acc, l_i, m_i, q, kt_ptrs, v_ptrs, stride_kn, stride_vn, q_idx, 0, sink_full,
                                    seq_len, window_size, sink_size, qk_scale, BLOCK_N, MASKED=False)
    acc, l_i, m_i = _forward_blocks(acc, l_i, m_i, q, kt_ptrs, v_ptrs, stride_kn, stride_vn, q_idx, sink_full,
                                    sink_hi, seq_len, window_size, sink_size, qk_scale, BLOCK_N, MASKED=True)
    acc, l_i, m_i = _forward_blocks(acc, l_i, m_i, q, kt_ptrs, v_ptrs, stride_kn, stride_vn, q_idx, window_lo,
                                    full_lo, seq_len, window_size, sink_size, qk_scale, BLOCK_N, MASKED=True)
    acc, l_i, m_i = _forward_blocks(acc, l_i, m_i, q, kt_ptrs, v_ptrs, stride_kn, stride_vn, q_idx, full_lo,
                                    full_hi, seq_len, window_size, sink_size, qk_scale, BLOCK_N, MASKED=False)
    acc, l_i, m_i = _forward_blocks(acc, l_i, m_i, q, kt_ptrs, v_ptrs, stride_kn, stride_vn, q_idx, full_hi,
                                    window_hi, seq_len, window_size, sink_size, qk_scale, BLOCK_N, MASKED=True)
    l_i = tl.where(l_i > 0.0, l_i, 1.0)   # rows past the end only: every real query sees its own key
    o = acc / l_i[:, None]
    lse = (m_i + tl.math.log2(l_i)) * LN_2
    tl.store(O + off_b * stride_ob + off_h * stride_oh + q_idx[:, None] * stride_om + offs_d[None, :] * stride_od,
             o.to(O.dtype.element_ty), mask=q_idx[:, None] < seq_len)
    tl.store(LSE + off_bh.to(tl.int64) * seq_len + q_idx, lse, mask=q_idx < seq_len)


# ---- the backward: the preprocess, then one launch of dK/dV programs (key block, K/V head) and dQ
# programs (query block, query head) ----

@triton.jit
def _preprocess_kernel(O, DO, DELTA, stride_ob, stride_oh, stride_om, stride_od,
                       stride_dob, stride_doh, stride_dom, stride_dod, n_heads, seq_len,
                       HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    # Delta_i = rowsum(dO_i * O_i) for BLOCK_M rows of one (batch, query head).
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
def _kv_segments(k_start, seq_len, window_size, sink_size, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # Your query ranges cut into five segments: the window loop as (window_lo, full_lo, full_hi,
    # window_hi), the sink loop as (sink_lo, sink_full). Whole tiles (no mask) are those whose
    # every query comes at or after every key of the block and holds all of them in its window,
    # or, for a block of sinks only, every query at or after the block.
    window_lo, window_hi, sink_lo = query_block_ranges(k_start, seq_len, window_size, sink_size, BLOCK_M, BLOCK_N)
    all_sinks = k_start + BLOCK_N <= sink_size
    after = tl.cdiv(k_start + BLOCK_N - 1, BLOCK_M) * BLOCK_M     # first query block after the last key
    inside = tl.where(all_sinks, seq_len, (k_start + window_size) // BLOCK_M * BLOCK_M)
    full_lo = tl.minimum(tl.maximum(after, window_lo), tl.maximum(window_hi, window_lo))
    full_hi = tl.minimum(tl.maximum(inside, full_lo), tl.maximum(window_hi, full_lo))
    sink_full = tl.where(all_sinks, tl.minimum(tl.maximum(sink_lo, after), seq_len), seq_len)
    return window_lo, full_lo, full_hi, window_hi, sink_lo, sink_full


@triton.jit
def _dkdv_blocks(dk, dv, n_visits, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, stride_qm, stride_dom, key_idx,
                 lo, hi, seq_len, window_size, sink_size, qk_scale, sm_scale,
                 BLOCK_M: tl.constexpr, MASKED: tl.constexpr):
    # The query blocks lo, lo + BLOCK_M, ... below hi of one query head, folded into dK and dV.
    offs_m = tl.arange(0, BLOCK_M)
    for start_m in range(lo, hi, BLOCK_M):
        query_idx = start_m + offs_m
        rows = (query_idx >= 0) & (query_idx < seq_len)   # nothing outside the tensors is read
        q = tl.load(q_ptrs + start_m * stride_qm, mask=rows[:, None], other=0.0)
        do = tl.load(do_ptrs + start_m * stride_dom, mask=rows[:, None], other=0.0)
        lse = tl.load(lse_ptrs + query_idx, mask=rows, other=0.0)
        delta = tl.load(delta_ptrs + query_idx, mask=rows, other=0.0)
        dk, dv = dkdv_update(dk, dv, q, k, v, do, lse, delta, qk_scale, sm_scale, query_idx, key_idx,
                             window_size, sink_size, MASKED)
        n_visits += 1
    return dk, dv, n_visits


@triton.jit
def _dkdv_program(
    off_bkv, start_n, Q, K, V, DO, DK, DV, LSE, DELTA, VISITS,
    stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd, stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    n_heads, n_kv_heads, group_size, seq_len, window_size, sink_size, qk_scale, sm_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, COUNT_VISITS: tl.constexpr,
):
    # One program owns BLOCK_N keys of one (batch, K/V head): it loads them once, and for every query
    # head of the group walks the query blocks that see them. One writer per dK/dV block, no atomics.
    off_b = (off_bkv // n_kv_heads).to(tl.int64)
    off_kv = off_bkv % n_kv_heads
    k_start = start_n * BLOCK_N
    key_idx = k_start + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    keys = key_idx[:, None] < seq_len
    k = tl.load(K + off_b * stride_kb + off_kv.to(tl.int64) * stride_kh + key_idx[:, None] * stride_kn
                + offs_d[None, :] * stride_kd, mask=keys, other=0.0)
    v = tl.load(V + off_b * stride_vb + off_kv.to(tl.int64) * stride_vh + key_idx[:, None] * stride_vn
                + offs_d[None, :] * stride_vd, mask=keys, other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    n_visits = tl.full([], 0, dtype=tl.int32)
    window_lo, full_lo, full_hi, window_hi, sink_lo, sink_full = _kv_segments(
        k_start, seq_len, window_size, sink_size, BLOCK_M, BLOCK_N)
    head_lo, head_hi = group_heads(off_kv, group_size)
    head_lo = tl.maximum(head_lo, 0)          # only heads that exist are read
    head_hi = tl.minimum(head_hi, n_heads)
    for head in range(head_lo, head_hi):
        off_h = tl.cast(head, tl.int64)
        q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
        do_ptrs = (DO + off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_dom
                   + offs_d[None, :] * stride_dod)
        lse_ptrs = LSE + (off_b * n_heads + off_h) * seq_len
        delta_ptrs = DELTA + (off_b * n_heads + off_h) * seq_len
        # The window loop: its first blocks cut the diagonal (masked), then whole tiles, then the window's end.
        dk, dv, n_visits = _dkdv_blocks(dk, dv, n_visits, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, stride_qm,
                                        stride_dom, key_idx, window_lo, full_lo, seq_len, window_size, sink_size,
                                        qk_scale, sm_scale, BLOCK_M, MASKED=True)
        dk, dv, n_visits = _dkdv_blocks(dk, dv, n_visits, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, stride_qm,
                                        stride_dom, key_idx, full_lo, full_hi, seq_len, window_size, sink_size,
                                        qk_scale, sm_scale, BLOCK_M, MASKED=False)
        dk, dv, n_visits = _dkdv_blocks(dk, dv, n_visits, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, stride_qm,
                                        stride_dom, key_idx, full_hi, window_hi, seq_len, window_size, sink_size,
                                        qk_scale, sm_scale, BLOCK_M, MASKED=True)
        # The sink loop: later queries that see only this block's sinks (whole tiles for a block of sinks).
        dk, dv, n_visits = _dkdv_blocks(dk, dv, n_visits, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, stride_qm,
                                        stride_dom, key_idx, sink_lo, sink_full, seq_len, window_size, sink_size,
                                        qk_scale, sm_scale, BLOCK_M, MASKED=True)
        dk, dv, n_visits = _dkdv_blocks(dk, dv, n_visits, k, v, q_ptrs, do_ptrs, lse_ptrs, delta_ptrs, stride_qm,
                                        stride_dom, key_idx, sink_full, seq_len, seq_len, window_size, sink_size,
                                        qk_scale, sm_scale, BLOCK_M, MASKED=False)
    tl.store(DK + off_b * stride_dkb + off_kv.to(tl.int64) * stride_dkh + key_idx[:, None] * stride_dkn
             + offs_d[None, :] * stride_dkd, dk.to(DK.dtype.element_ty), mask=keys)
    tl.store(DV + off_b * stride_dvb + off_kv.to(tl.int64) * stride_dvh + key_idx[:, None] * stride_dvn
             + offs_d[None, :] * stride_dvd, dv.to(DV.dtype.element_ty), mask=keys)
    if COUNT_VISITS:
        # For grading: how many (query block, query head) tiles this program folded in.
        tl.store(VISITS + off_bkv * tl.cdiv(seq_len, BLOCK_N) + start_n, n_visits)


@triton.jit
def _dq_blocks(dq, n_visits, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, query_idx, lo, hi, seq_len,
               window_size, sink_size, qk_scale, sm_scale, BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    # The key blocks lo, lo + BLOCK_N, ... below hi, folded into dQ.
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        key_idx = start_n + offs_n
        in_seq = key_idx[:, None] < seq_len
        k = tl.load(k_ptrs + start_n * stride_kn, mask=in_seq, other=0.0)
        v = tl.load(v_ptrs + start_n * stride_vn, mask=in_seq, other=0.0)
        dq = dq_update(dq, q, k, v, do, lse, delta, qk_scale, sm_scale, query_idx, key_idx, window_size, sink_size,
                       MASKED)
        n_visits += 1
    return dq, n_visits


@triton.jit
def _dq_program(
    start_m, off_bh, Q, K, V, DO, DQ, LSE, DELTA,
    stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    n_heads, group_size, seq_len, window_size, sink_size, qk_scale, sm_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # One program owns BLOCK_M queries of one (batch, query head) and walks the key blocks the
    # forward's program walked: the sinks, then the window (K/V head h // group_size).
    off_b = (off_bh // n_heads).to(tl.int64)
    off_h = (off_bh % n_heads).to(tl.int64)
    off_kv = off_h // group_size
    row0 = off_bh.to(tl.int64) * seq_len
    q_start = start_m * BLOCK_M
    query_idx = q_start + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = query_idx[:, None] < seq_len
    q = tl.load(Q + off_b * stride_qb + off_h * stride_qh + query_idx[:, None] * stride_qm
                + offs_d[None, :] * stride_qd, mask=rows, other=0.0)
    do = tl.load(DO + off_b * stride_dob + off_h * stride_doh + query_idx[:, None] * stride_dom
                 + offs_d[None, :] * stride_dod, mask=rows, other=0.0)
    lse = tl.load(LSE + row0 + query_idx, mask=query_idx < seq_len, other=0.0)
    delta = tl.load(DELTA + row0 + query_idx, mask=query_idx < seq_len, other=0.0)
    k_ptrs = K + off_b * stride_kb + off_kv * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
    v_ptrs = V + off_b * stride_vb + off_kv * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    n_visits = tl.full([], 0, dtype=tl.int32)
    sink_full, sink_hi, window_lo, full_lo, full_hi, window_hi = _segments(
        q_start, seq_len, window_size, sink_size, BLOCK_M, BLOCK_N)
    dq, n_visits = _dq_blocks(dq, n_visits, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, query_idx, 0,
                              sink_full, seq_len, window_size, sink_size, qk_scale, sm_scale, BLOCK_N, MASKED=False)
    dq, n_visits = _dq_blocks(dq, n_visits, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, query_idx,
                              sink_full, sink_hi, seq_len, window_size, sink_size, qk_scale, sm_scale, BLOCK_N,
                              MASKED=True)
    dq, n_visits = _dq_blocks(dq, n_visits, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, query_idx,
                              window_lo, full_lo, seq_len, window_size, sink_size, qk_scale, sm_scale, BLOCK_N,
                              MASKED=True)
    dq, n_visits = _dq_blocks(dq, n_visits, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, query_idx,
                              full_lo, full_hi, seq_len, window_size, sink_size, qk_scale, sm_scale, BLOCK_N,
                              MASKED=False)
    dq, n_visits = _dq_blocks(dq, n_visits, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, query_idx,
                              full_hi, window_hi, seq_len, window_size, sink_size, qk_scale, sm_scale, BLOCK_N,
                              MASKED=True)
    tl.store(DQ + off_b * stride_dqb + off_h * stride_dqh + query_idx[:, None] * stride_dqm
             + offs_d[None, :] * stride_dqd, dq.to(DQ.dtype.element_ty), mask=rows)


@triton.jit
def _backward_kernel(
    Q, K, V, DO, DQ, DK, DV, LSE, DELTA, VISITS,
    stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd, stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    batch, n_heads, n_kv_heads, group_size, seq_len, window_size, sink_size, qk_scale, sm_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M1: tl.constexpr, BLOCK_N1: tl.constexpr, BLOCK_M2: tl.constexpr,
    BLOCK_N2: tl.constexpr, COUNT_VISITS: tl.constexpr,
):
    # A one-dimensional grid: the first batch * n_kv_heads * cdiv(L, BLOCK_N1) programs own key blocks
    # (dK, dV), the rest query blocks (dQ). Programs start roughly in the order of their ids, so the
    # longest start first: every dK/dV program (it walks the query blocks of a whole group of heads)
    # before any dQ program (the key blocks of one head), and among them key block 0 of every (batch,
    # K/V head) before key block 1, and so on: the sinks' programs, which walk to the end of the
    # sequence, start first and do not finish last.
    pid = tl.program_id(0)
    n_bkv = batch * n_kv_heads
    n_key_programs = n_bkv * tl.cdiv(seq_len, BLOCK_N1)
    if pid < n_key_programs:
        _dkdv_program(pid % n_bkv, pid // n_bkv, Q, K, V, DO, DK, DV, LSE, DELTA, VISITS,
                      stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
                      stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
                      stride_dkb, stride_dkh, stride_dkn, stride_dkd, stride_dvb, stride_dvh, stride_dvn, stride_dvd,
                      n_heads, n_kv_heads, group_size, seq_len, window_size, sink_size, qk_scale, sm_scale,
                      HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M1, BLOCK_N=BLOCK_N1, COUNT_VISITS=COUNT_VISITS)
    else:
        pid_q = pid - n_key_programs
        n_query_blocks = tl.cdiv(seq_len, BLOCK_M2)
        _dq_program(pid_q % n_query_blocks, pid_q // n_query_blocks, Q, K, V, DO, DQ, LSE, DELTA,
                    stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
                    stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
                    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
                    n_heads, group_size, seq_len, window_size, sink_size, qk_scale, sm_scale,
                    HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M2, BLOCK_N=BLOCK_N2)


# Tiles: (forward BLOCK_M, BLOCK_N; dK/dV: BLOCK_M1 queries per step, BLOCK_N1 keys per program;
# dQ: BLOCK_M2 queries per program, BLOCK_N2 keys per step; num_warps, num_stages). The forward's
# 64 x 64 are problem 6's (chosen on an H100); the backward's are problem 7's, chosen on an H200
# (square 64 x 64 steps, 4 warps). BLOCK_N1 is a multiple of BLOCK_M1 (a key block starts on a
# query block), as in problem 7.
_GPU_CONFIGS = {16: (64, 64, 64, 64, 64, 64, 4, 3), 32: (64, 64, 64, 64, 64, 64, 4, 3),
                64: (64, 64, 64, 64, 64, 64, 4, 3), 128: (64, 64, 64, 64, 64, 64, 4, 2)}
_INTERPRETER_CONFIG = (32, 32, 16, 32, 32, 16, 4, 1)   # small tiles: several blocks at the CPU's small L


def launch_config(q):
    """The tiles for this input: (BLOCK_M, BLOCK_N, BLOCK_M1, BLOCK_N1, BLOCK_M2, BLOCK_N2, num_warps, num_stages)."""
    if q.device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return _INTERPRETER_CONFIG
    return _GPU_CONFIGS[q.shape[-1]]


def _check(q, k, v, window_size, sink_size):
    check_attention_inputs(q, k, v, allow_gqa=True)
    if k.shape[2] != q.shape[2]:
        raise ValueError(f"q has {q.shape[2]} positions but k/v have {k.shape[2]}; a causal window needs Lq == Lk")
    if int(window_size) < 1 or int(sink_size) < 0:
        raise ValueError(f"need window_size >= 1 and sink_size >= 0, got {window_size} and {sink_size}")


def attention_forward(q, k, v, window_size, sink_size=0, config=None):
    """(o, lse) of causal attention with a window of `window_size` keys and `sink_size` sinks
    (GQA: k, v may have fewer heads); lse float32 (B, Hq, L) in natural log."""
    _check(q, k, v, window_size, sink_size)
    batch, n_heads, seq_len, head_dim = q.shape
    block_m, block_n, *_, num_warps, num_stages = config or launch_config(q)
    o = torch.empty_like(q)
    lse = torch.empty((batch, n_heads, seq_len), device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(seq_len, block_m), batch * n_heads)
    _forward_kernel[grid](q, k, v, o, lse, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
                          n_heads, n_heads // k.shape[1], seq_len, int(window_size), int(sink_size),
                          LOG2_E.value / math.sqrt(head_dim), HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
                          num_warps=num_warps, num_stages=num_stages)
    return o, lse


def attention_backward(q, k, v, o, lse, do, window_size, sink_size=0, config=None, _visits=None):
    """(dq, dk, dv) from the forward's o and natural-log lse and the upstream gradient do; dk and dv
    have k's heads (each the sum over its group of query heads). Pass a dict as `_visits` to get the
    number of (query block, query head) tiles each dK/dV program visited (`counts`, shape
    (B * Hkv, number of key blocks)) and the tile sizes."""
    _check(q, k, v, window_size, sink_size)
    if do.shape != q.shape or do.dtype != q.dtype or do.device != q.device:
        raise ValueError(f"do must be like q: shape {tuple(q.shape)}, {q.dtype}; got {tuple(do.shape)}, {do.dtype}")
    batch, n_heads, seq_len, head_dim = q.shape
    n_kv_heads = k.shape[1]
    _, _, block_m1, block_n1, block_m2, block_n2, num_warps, num_stages = config or launch_config(q)
    sm_scale = 1.0 / math.sqrt(head_dim)
    window_size, sink_size = int(window_size), int(sink_size)
    delta = torch.empty((batch, n_heads, seq_len), device=q.device, dtype=torch.float32)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    lse = lse.contiguous()
    _preprocess_kernel[(triton.cdiv(seq_len, block_m2), batch * n_heads)](
        o, do, delta, *o.stride(), *do.stride(), n_heads, seq_len, HEAD_DIM=head_dim, BLOCK_M=block_m2)
    n_key_blocks = triton.cdiv(seq_len, block_n1)
    visits = delta  # a placeholder pointer: the counting code is compiled only when COUNT_VISITS
    if _visits is not None:
        visits = torch.zeros((batch * n_kv_heads, n_key_blocks), device=q.device, dtype=torch.int32)
        _visits.update(counts=visits, block_m=block_m1, block_n=block_n1, group_size=n_heads // n_kv_heads)
    grid = (batch * n_kv_heads * n_key_blocks + batch * n_heads * triton.cdiv(seq_len, block_m2),)
    _backward_kernel[grid](
        q, k, v, do, dq, dk, dv, lse, delta, visits,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(), *dk.stride(), *dv.stride(),
        batch, n_heads, n_kv_heads, n_heads // n_kv_heads, seq_len, window_size, sink_size,
        sm_scale * LOG2_E.value, sm_scale, HEAD_DIM=head_dim, BLOCK_M1=block_m1, BLOCK_N1=block_n1,
        BLOCK_M2=block_m2, BLOCK_N2=block_n2, COUNT_VISITS=_visits is not None,
        num_warps=num_warps, num_stages=num_stages)
    return dq, dk, dv


class FlashAttentionWindow(torch.autograd.Function):
    """The forward kernel and your backward as one differentiable PyTorch function."""

    @staticmethod
    def forward(ctx, q, k, v, window_size, sink_size, visits):
        o, lse = attention_forward(q, k, v, window_size, sink_size)
        ctx.save_for_backward(q, k, v, o, lse)   # O(L) memory: no L x L matrix is kept
        ctx.mask = (window_size, sink_size, visits)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        window_size, sink_size, visits = ctx.mask
        dq, dk, dv = attention_backward(q, k, v, o, lse, do, window_size, sink_size, _visits=visits)
        return dq, dk, dv, None, None, None


def flash_attention_window(q, k, v, window_size=None, sink_size=0):
    """Causal attention with a window and sinks (GQA) that you can train with:
    `flash_attention_window(q, k, v, W, S).sum().backward()` runs your kernels. W = None: no window."""
    window_size = q.shape[2] if window_size is None else window_size
    return FlashAttentionWindow.apply(q, k, v, window_size, sink_size, None)


def flash_attention_grads(q, k, v, do, causal=True, window_size=None, sink_size=0, _visits=None):
    """(dq, dk, dv): the gradients of sum(flash_attention_window(q, k, v, W, S) * do), through autograd
    as a training step computes them. What the checks call. The mask is always causal."""
    if not causal:
        raise ValueError("this kernel computes causal attention (with a window and sinks); causal=False is problem 7's")
    if not isinstance(do, torch.Tensor) or do.shape != q.shape or do.dtype != q.dtype:
        raise ValueError(f"do must be like q: shape {tuple(q.shape)}, {q.dtype}; got "
                         f"{tuple(getattr(do, 'shape', ()))}, {getattr(do, 'dtype', type(do).__name__)}")
    window_size = q.shape[2] if window_size is None else window_size
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    with torch.enable_grad():
        o = FlashAttentionWindow.apply(q, k, v, window_size, sink_size, _visits)
        return torch.autograd.grad(o, (q, k, v), do)


flash_attention_grads.launch_config = launch_config   # the checks read the tile sizes from here

# %% [markdown]
# ### Check as you go, and a hint when you are stuck
#
# Run the next cell after every change to your cell (run the *Your code* cell and the kernel cell
# again first). It calls `flash_attention_grads` on the visible inputs of section 6 (a window with
# sinks; grouped-query attention) and compares $dQ$, $dK$ and $dV$ with float64 autograd of the
# reference attention, then counts the tiles the dK/dV programs visit. For a wrong case it says which
# gradients are wrong, where the first one first goes wrong (batch, head, and the query for $dQ$ or
# the key for $dK$, $dV$), and the likely cause: the checks re-enact the typical mistakes of this
# backward in float64 (a group's gradients not summed, the window or the sinks missing from the
# recompute, a block visited twice, the scale or $\Delta$ missing) and name the one your gradients
# match.
#
# If you are stuck, the cell after it is a hint ladder: each run reveals one more step, two nudges first
# and then the idea in words (never the code). `hint("problem8", 1)` shows a step again.

# %% nbgrader={"grade": false, "grade_id": "self_check", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem8 import check

check(flash_attention_grads)  # the visible inputs, with the grader's diagnosis when one is wrong

# %% nbgrader={"grade": false, "grade_id": "hints", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.hints import hint

hint("problem8");  # each run reveals the next step

# %% [markdown]
# ## 5. Check your work
#
# Each gradient check prints one line per test input: `PASS` or `FAIL`, the largest error of each
# gradient against float64 autograd of the reference attention (on the same 16-bit inputs and the
# same $dO$), and for a failure which gradients are wrong, where, and the most likely cause. The
# tolerance is problem 7's, 16 units in the last place of the dtype ($8\cdot10^{-3}$ for float16,
# $6.4\cdot10^{-2}$ for bfloat16), absolute and relative. The group sum adds the $G$ heads' contributions
# in float32 and rounds once, and a sink's row sums $G L$ terms whose error grows as the sum does: the
# reference kernels stay under a quarter of the tolerance, groups of 8 with 64 sinks included. The
# visit check prints how many tiles the dK/dV programs visited out of all of them, and for a failure
# which program visited which blocks too many (or too few).

# %% nbgrader={"grade": true, "grade_id": "test_window", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem8 import assert_backward_cases

# A window of 24 keys with 4 sinks, then a window of 16 without sinks; one query head per K/V head.
assert_backward_cases(flash_attention_grads, [Case(1, 2, 80, 16, window=24, sink=4, seed=1),
                                              Case(1, 1, 64, 32, window=16, sink=0, seed=2)])

# %% nbgrader={"grade": true, "grade_id": "test_gqa", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem8 import assert_backward_cases

# Grouped-query attention: 4 query heads on 2 K/V heads (groups of 2), then on 1 (a group of 4).
assert_backward_cases(flash_attention_grads, [Case(1, 4, 70, 32, H_kv=2, window=16, sink=20, seed=3),
                                              Case(1, 4, 48, 16, H_kv=1, window=8, sink=2, seed=4)])

# %% nbgrader={"grade": true, "grade_id": "test_block_visits", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem8 import check_visits

# Each dK/dV program visits exactly the query blocks that see one of its keys, once per query head.
check_visits(flash_attention_grads, [Case(1, 1, 128, 16, window=16, sink=4),
                                     Case(1, 2, 96, 16, H_kv=1, window=40, sink=40)])

# %% [markdown]
# ### What the grader also checks
#
# The cells below hold tests you cannot see. They check, in this order: windows and sinks around
# block boundaries on sequences that end inside a block ($W = 1$, $W \ge L$, $S = 0$, $S > L$, a single
# token); several batches and heads, every head dimension from 16 to 128, group sizes 1 to 8,
# bfloat16 (on a GPU) and float16; inputs and upstream gradients that are not contiguous in memory;
# and the tiles visited for all the window/sink combinations above. If the visible checks pass and
# your functions follow sections 2 and 3, these will too.

# %% nbgrader={"grade": true, "grade_id": "test_hidden_masks", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem8 import assert_backward_cases

# Hidden: windows and sinks around block boundaries, lengths that end inside a block.
### BEGIN HIDDEN TESTS
assert_backward_cases(flash_attention_grads, [
    Case(1, 1, 1, 16, window=1, sink=1, seed=10),
    Case(1, 2, 33, 16, window=1, sink=0, seed=11),
    Case(1, 1, 47, 32, window=100, sink=0, seed=12),
    Case(1, 2, 65, 16, window=31, sink=33, seed=13),
    Case(1, 1, 50, 16, window=5, sink=100, seed=14),
])
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_shapes_dtypes", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem8 import assert_backward_cases

# Hidden: several batches and heads, every head dimension, group sizes 1 to 8, bfloat16 (on a GPU) and float16.
### BEGIN HIDDEN TESTS
assert_backward_cases(flash_attention_grads, [
    Case(2, 2, 40, 16, H_kv=2, window=12, sink=2, seed=20),
    Case(1, 8, 24, 32, H_kv=1, window=8, sink=4, seed=21),
    Case(1, 2, 48, 64, "bfloat16", H_kv=1, window=20, sink=4, seed=22),
    Case(1, 2, 36, 128, H_kv=2, window=16, sink=1, seed=23),
])
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_layouts", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem8 import assert_backward_cases

# Hidden: inputs and upstream gradients that are not contiguous in memory.
### BEGIN HIDDEN TESTS
assert_backward_cases(flash_attention_grads, [
    Case(2, 2, 40, 32, "float16", "bshd", H_kv=1, window=16, sink=4, seed=30),
    Case(1, 2, 48, 16, "float16", "strided_d", H_kv=1, window=24, sink=0, seed=31),
    Case(1, 4, 33, 16, "float16", grad_layout="bshd", H_kv=2, window=8, sink=8, seed=32),
    Case(1, 2, 40, 64, "bfloat16", "bshd", grad_layout="strided_d", H_kv=1, window=32, sink=2, seed=33),
])
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_visits", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem8 import check_visits

# Hidden: tiles visited for windows and sinks around block boundaries, W >= L, S > L, group sizes.
### BEGIN HIDDEN TESTS
check_visits(flash_attention_grads, [
    Case(1, 1, 96, 16, window=1, sink=0),
    Case(1, 1, 96, 16, window=2, sink=0),   # the last query of a block's window starts the next query block
    Case(1, 1, 97, 16, window=33, sink=32),
    Case(1, 1, 70, 16, window=200, sink=0),
    Case(1, 1, 100, 16, window=4, sink=300),
    Case(2, 4, 64, 16, H_kv=2, window=16, sink=1),
])
### END HIDDEN TESTS

# %% [markdown]
# ## 6. How fast is it?
#
# On a GPU the next cell times a training step's attention, forward + backward, and the backward
# alone, at a fixed window ($W = 1024$, $S = 4$, bfloat16, 16 query heads on 4 K/V heads) for growing
# $L$, next to FlexAttention with the same mask as a block mask (compiled, forward and backward), with
# `triton.testing.do_bench` medians. TFLOPS count only the (query, key) pairs the mask lets through:
# $4\,B H_q D$ per pair for the forward, $2.5\times$ that for the backward. A backward that skips what
# the mask hides keeps its TFLOPS flat as $L$ grows. On the CPU interpreter there is nothing meaningful
# to time, and the cell says so.

# %% nbgrader={"grade": false, "grade_id": "benchmark", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem8 import benchmark

benchmark(flash_attention_window)

# %% [markdown]
# ### Performance points (2 of the 12)
#
# The last graded cell times `flash_attention_grads` (the course's forward and your backward) against
# the course's reference kernels, on the same GPU, in the same run, on the same inputs (B=2, 16 query
# heads on 4 K/V heads, L=8192, D=64, $W = 1024$, $S = 4$, in float16), taking turns over several
# rounds: the grade is the **ratio** of the two times. A ratio of at most 1.3 earns both points, at
# most 1.6 one point, anything slower none; a kernel that fails the self-check earns none, however
# fast. Under the CPU interpreter (no GPU) the ratio measures how much work your kernels do rather than
# how fast a GPU would run them. Without the course's `solutions/` folder (a learner's install) the
# cell only says that it is measured at grading time.

# %% nbgrader={"grade": true, "grade_id": "test_performance", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem8 import performance_points

# Performance: forward + your backward over the reference kernels' time, on the same GPU in the same run.
# Ratio <= 1.3 earns both points, <= 1.6 one; a kernel that fails the self-check earns none.
# Under the CPU interpreter the ratio measures how much work the kernels do, not GPU speed.
performance_points(flash_attention_grads)

# %% [markdown] nbgrader={"grade": false, "grade_id": "outro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 7. What you built, and what comes next
#
# `flash_attention_window(q, k, v, W, S)` is a differentiable attention layer for long contexts:
# grouped-query heads, a sliding window and sinks, $O\bigl(L(W+S)\bigr)$ work and $O(L)$ memory in both
# directions. The backward rebuilt $P$ under the same mask as the forward, walked each key block's
# queries by reading the mask by columns, and summed a K/V head's gradients over its group without a
# single copy of $K$ or $V$. With problems 3 to 8 you have every kernel a small language model needs;
# the capstone wires them into one and trains it.
