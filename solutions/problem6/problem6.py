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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/flash-attention-course/flash-attention-course/blob/main/notebooks/problem6/problem6.ipynb)
#
# Runs in Colab (GPU or CPU), on a laptop without a GPU, or on a GPU machine: [how to start, and what each can do](https://github.com/flash-attention-course/flash-attention-course/blob/main/README.md#start).

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Problem 6 · Sliding windows and attention sinks (causal, with GQA)
#
# Long-context models rarely let every token look at every earlier token. Most look back a fixed
# distance, a **sliding window** of $W$ keys, and keep a handful of the very first tokens, the
# **attention sinks**, visible to everyone. In this chapter you teach your FlashAttention kernel
# that mask, and, what matters just as much, to *skip* every block of keys the mask hides, so
# that its time grows linearly with the sequence length instead of quadratically.
#
# **You will learn** why windows need sinks, how a two-dimensional mask turns into two ranges of
# key blocks per program, why a block visited twice is a silent bug, and how to check that a
# kernel does no more work than its mask allows.
#
# **How this notebook works.** Run the cells from the top. The first code cell installs the
# course when it is missing (in Colab) and picks the GPU, or Triton's CPU interpreter when there
# is no GPU that Triton supports (everything here works on a laptop, only slower). You edit one
# cell, marked *Your code*: two small `@triton.jit` functions that decide *which keys* and *which
# blocks*. The online softmax from problem 3 and the kernel around it are given. The self-check
# after the kernel tells you what is wrong and why, a hint cell reveals one step at a time, and
# the check cells of section 6 earn the points; the grader runs more checks of the same kind on
# inputs you do not see.

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
# ## 1. Why windows, and why sinks
#
# Causal attention over $L$ tokens costs about $2BHL^2D$ multiply-adds, and at generation time
# its key/value cache grows with every token. A **sliding window** caps both: query $i$ looks
# only at the $W$ most recent keys, itself included. Mistral 7B does this in every layer with
# $W = 4096$. Information still travels further than $W$, because layer $\ell$ reads layer
# $\ell-1$'s outputs, each of which already summarises $W$ tokens: after $k$ layers a token can
# depend on about $k \cdot W$ earlier ones. At inference the cache becomes a ring buffer of $W$
# entries, whatever the length of the conversation.
#
# A window alone fails in a surprising way. Xiao et al. (*Efficient Streaming Language Models with
# Attention Sinks*, 2023) found that trained models park a large share of their attention on the
# first few tokens, whatever those tokens say: the softmax must put its mass somewhere, and the
# first tokens, which every later query could see during training, became the place to put it.
# Once a window slides past them, that mass has nowhere to go and the perplexity explodes. Keeping
# just the first $S = 4$ tokens visible to every query (*attention sinks*) restores it. That is
# the mask of this chapter: a causal window of $W$ keys plus $S$ sinks.
#
# **The cost.** Each query sees at most $W + S$ keys, so the work is $O\bigl(L (W + S) D\bigr)$:
# linear in $L$ for a fixed window. But only if the kernel *skips* the key blocks the mask hides.
# A kernel that walks over every block and masks the scores gets the right numbers at the full
# quadratic price; the grader counts the blocks your kernel visits to tell the two apart.

# %% [markdown]
# ## 2. The mask
#
# Query $i$ may attend to key $j$ when
#
# $$
# M_{ij} \;=\; \underbrace{[\,j \le i\,]}_{\text{causal}} \;\wedge\;
# \Bigl(\underbrace{[\,j > i - W\,]}_{\text{window: } i-(W-1)\,\le\, j} \;\vee\; \underbrace{[\,j < S\,]}_{\text{sink}}\Bigr),
# $$
#
# which is exactly the grader's `create_mask_bool`: the window is $i-(W-1) \le j \le i$ ($W$ keys,
# the query's own key included) and a sink is a key $j < S$ with $j \le i$. A sink is still causal:
# query 1 does not see sink 3. The output and the log-sum-exp run over the visible keys only,
#
# $$
# O_i = \frac{\sum_{j:\,M_{ij}} e^{s_{ij}}\, v_j}{\sum_{j:\,M_{ij}} e^{s_{ij}}}, \qquad
# \mathrm{LSE}_i = \log \sum_{j:\,M_{ij}} e^{s_{ij}}, \qquad s_{ij} = \frac{q_i \cdot k_j}{\sqrt{D}} .
# $$
#
# The edge cases are worth a moment, because the hidden tests visit all of them: $W = 1$ leaves
# each query itself (and the sinks); $W \ge L$ is plain causal attention; $S = 0$ is a window with
# no sinks; $S \ge L$ makes every earlier key a sink, which is causal attention again. Query $i$
# sees $\min(i+1, W) + \max\bigl(0, \min(S, i - W + 1)\bigr)$ keys. Every row sees at least its own
# key, so no row is ever empty.
#
# As in problem 5, $K$ and $V$ may have fewer heads than $Q$ (grouped-query attention): query head
# $h$ reads K/V head $h \,/\!/\, (H_q / H_{kv})$, in place. The kernel below does that for you.
#
# The pictures are drawn from the grader's own mask function, on a small grid of $16 \times 16$
# tiles: blue cells are visible, hatched tiles hold at least one visible key and must be visited;
# every other tile can be skipped. Left to right: causal, a window of 24, the same window with 8
# sinks. The sinks add a column of tiles on the left; everything else hugs the diagonal.

# %% nbgrader={"grade": false, "grade_id": "plot_masks", "locked": true, "schema_version": 3, "solution": false, "task": false}
import matplotlib.pyplot as plt

from autograder.problems.problem6 import plot_masks

plot_masks(seq_len=96, window=24, sink=8, block=16)
plt.show()

# %% [markdown]
# ## 3. From the mask to blocks of keys
#
# One program owns the queries $q_{\text{start}} \le i < q_{\text{end}}$, where
# $q_{\text{end}} = \min(q_{\text{start}} + \texttt{BLOCK\_M}, L)$, and walks over keys in blocks of
# `BLOCK_N`. Which keys can *any* of its queries see?
#
# * **The window.** The earliest key in any of its windows belongs to its first query:
#   $\max(q_{\text{start}} - (W-1),\, 0)$. The latest is its last query's own key, $q_{\text{end}} - 1$.
#   Rounded out to whole blocks, the window loop starts at that first key rounded *down* to a
#   multiple of `BLOCK_N` and runs while the block start is below $q_{\text{end}}$.
# * **The sinks.** Keys $0 .. \min(S, q_{\text{end}}) - 1$: no query of this program sees a sink at
#   or after $q_{\text{end}}$. Rounded *up* to whole blocks.
# * **No block twice.** For the first programs (and whenever $S$ is large) the two ranges overlap:
#   block 0 holds sinks *and* lies inside the window. A block folded in twice counts each of its
#   visible keys twice, in the numerator and in the denominator of the softmax: the output is
#   wrong, with no error and no NaN. The sink range has to stop where the window range begins.
#
# Everything in both ranges has to be visited and nothing else: every block the loops visit holds
# a key that one of the program's queries may see. Per program that is at most
# $\lceil (W + \texttt{BLOCK\_M} - 1)/\texttt{BLOCK\_N} \rceil + 1$ window blocks and
# $\lceil S / \texttt{BLOCK\_N} \rceil$ sink blocks, a number that does not depend on $L$. With
# $L / \texttt{BLOCK\_M}$ programs, the total work is linear in $L$.
#
# **Masked and whole tiles.** Inside those ranges most tiles are *whole*: every query of the
# program sees every key of the tile, and the kernel skips the mask (no comparisons, no
# `tl.where`). Only the tiles that cut through the window's edge, the diagonal, the last sink or
# the end of the sequence go through the mask. The given kernel makes that split itself: the sink
# range becomes whole sink blocks then masked ones, the window range becomes a masked edge, whole
# blocks, and a masked diagonal. Keys past the end of the sequence need no bounds test in the mask:
# they come after every real query, so causality already hides them (the kernel's masked loads
# fill them with zeros, so nothing outside the tensors is read).
#
# Below: the tiles the course's kernel actually uses (`BLOCK_M = BLOCK_N = 64`) on $L = 640$ with
# $W = 200$ and $S = 4$. Each row of tiles is one program: a few sink tiles on the left, then a
# band of about $W/64 + 2$ tiles along the diagonal, however long the sequence.

# %% nbgrader={"grade": false, "grade_id": "plot_tiles", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.plots import plot_mask

plot_mask(640, window=200, sink=4, block_m=64, block_n=64)
plt.show()

# %% [markdown]
# ## 4. The online softmax, given
#
# The next cell is problem 3's online softmax, with two changes. The masking moved out of it: the
# kernel sets hidden scores to $-\infty$ before calling it (with your `visible`). And it guards a
# case problem 3 never had: a row with no visible key in the current block *and* none before it.
# With a window, that happens all the time (a masked edge tile can hold keys that only the last
# rows of the block may see). Its running max is still $-\infty$, and $e^{-\infty - (-\infty)}$ is
# NaN; taking 0 as the reference point for such a row keeps it empty instead:
# $\alpha = 2^{-\infty} = 0$ and $p = 2^{-\infty} = 0$.
#
# $$
# m_t = \max\bigl(m_{t-1}, \max_j s_j\bigr), \quad
# \alpha_t = 2^{m_{t-1} - m_t}, \quad
# \ell_t = \alpha_t \ell_{t-1} + \sum_j 2^{s_j - m_t}, \quad
# \mathrm{acc}_t = \alpha_t\, \mathrm{acc}_{t-1} + \sum_j 2^{s_j - m_t} v_j
# $$
#
# (scores in base-2 units, the scale $\log_2 e / \sqrt{D}$ folded in), and at the end
# $O = \mathrm{acc}/\ell$, $\mathrm{LSE} = \ln 2 \cdot (m + \log_2 \ell)$.
#
# Because the recurrence is exact whatever the order of the blocks, the kernel may fold in the
# sink blocks first and the window afterwards.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math

import torch
import triton
import triton.language as tl

LN_2 = tl.constexpr(0.6931471805599453)  # log(2): converts base-2 logs back to natural
LOG2_E = 1.4426950408889634              # log2(e): turns exp(x) into exp2(x * LOG2_E)


# %% nbgrader={"grade": false, "grade_id": "online_softmax", "locked": true, "schema_version": 3, "solution": false, "task": false}
@triton.jit
def online_softmax_update(acc, l_i, m_i, s, v):
    """Fold one block of keys into the running softmax (problem 3's update, given here).

    s holds the block's scores times softmax_scale * log2(e), with -inf where a key is hidden.
    A row may have no visible key in this block *and* none before it (a window block that
    starts left of the row's own window, say): its max is then still -inf, and
    exp2(-inf - (-inf)) would be NaN. Using 0 as the reference point for such a row keeps
    alpha = exp2(-inf) = 0 and p = exp2(-inf) = 0, so the row simply stays empty.
    """
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_ref)
    p = tl.math.exp2(s - m_ref[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])  # 16-bit operands, float32 accumulation
    return acc, l_i, m_new


@triton.jit
def finalize(acc, l_i, m_i):
    """(o, lse): the normalised output and the natural-log log-sum-exp of each row.

    Every real query sees at least its own key, so l_i > 0 there; only the rows past the end of
    the sequence (never stored) can have l_i = 0, and 1 keeps them free of 0/0.
    """
    l_i = tl.where(l_i > 0.0, l_i, 1.0)
    return acc / l_i[:, None], (m_i + tl.math.log2(l_i)) * LN_2


# %% [markdown]
# ## 5. Your code
#
# Write the two `@triton.jit` functions in the next cell. They decide everything about which keys
# count and which blocks are read; the kernel after them does the rest.
#
# * `visible(q_idx, k_idx, window_size, sink_size)` returns the `(BLOCK_M, BLOCK_N)` boolean mask of
#   one tile: `True` where query `q_idx[i]` may attend to key `k_idx[j]` under the rules of
#   section 2. `q_idx[:, None]` and `k_idx[None, :]` broadcast a column against a row; `&`, `|`,
#   `<`, `<=` work element-wise.
# * `key_block_ranges(q_start, seq_len, window_size, sink_size, BLOCK_M, BLOCK_N)` returns
#   `(sink_hi, window_lo, window_hi)`. The kernel visits the key blocks that start at
#   `0, BLOCK_N, ...` below `sink_hi` (the sink loop) and at `window_lo, window_lo + BLOCK_N, ...`
#   below `window_hi` (the window loop). `window_lo` and `sink_hi` must be multiples of `BLOCK_N`.
#   Together: every block holding a key some query of the program may see, each exactly once, and
#   no other. `tl.minimum`, `tl.maximum` and `tl.cdiv(a, b)` (that is $\lceil a/b \rceil$) work on
#   these integers; use `//` only on numbers that are not negative.
#
# The kernel counts the blocks each program visits (pass `_visits=dict()` to the wrapper to see the
# counts), and the grader compares them with the minimum for each input: the right values from too
# many blocks earn the value points but not the visit points.
#
# Keep the cell to `@triton.jit` functions (and constants, if you want any): no imports, no other
# statements. When grading, the tests run in a fresh interpreter that holds only the course's cells and
# this one, not in this notebook: their verdicts are your points, and your feedback shows them under
# each test cell. On the CPU
# interpreter everything runs in float16, because bfloat16 `tl.dot` gives wrong results there (a
# known interpreter bug); on a GPU the checks use both.

# %% nbgrader={"grade": false, "grade_id": "window_rules", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def visible(q_idx, k_idx, window_size, sink_size):
    """The attention mask of one tile: True where query q_idx[i] may attend to key k_idx[j].

    q_idx  (BLOCK_M,) int32  positions of the block's queries in the sequence
    k_idx  (BLOCK_N,) int32  positions of the block's keys
    window_size: a query sees itself and the window_size - 1 keys before it
    sink_size:   keys 0 .. sink_size - 1 are seen by every query that comes after them

    Returns a (BLOCK_M, BLOCK_N) boolean tensor.
    """
    ### BEGIN SOLUTION
    q = q_idx[:, None]
    k = k_idx[None, :]
    in_window = (k <= q) & (k > q - window_size)
    is_sink = (k < sink_size) & (k <= q)
    mask = in_window | is_sink
    ### END SOLUTION
    return mask


@triton.jit
def key_block_ranges(q_start, seq_len, window_size, sink_size, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Which key blocks the program for queries q_start .. q_start + BLOCK_M - 1 visits.

    Returns (sink_hi, window_lo, window_hi). The kernel then visits the key blocks that start at
        0, BLOCK_N, 2 * BLOCK_N, ...       below sink_hi     (the sink loop), and
        window_lo, window_lo + BLOCK_N, ... below window_hi  (the window loop).
    Both loops start on a multiple of BLOCK_N. Together they must cover every key that some
    query of this block may see, visit no block twice, and visit no block without such a key.
    """
    ### BEGIN SOLUTION
    q_end = tl.minimum(q_start + BLOCK_M, seq_len)           # one past the last real query
    window_hi = q_end                                        # no query sees a key after itself
    first_key = tl.maximum(q_start - (window_size - 1), 0)   # the earliest key in any window here
    window_lo = (first_key // BLOCK_N) * BLOCK_N
    sink_hi = tl.cdiv(tl.minimum(sink_size, q_end), BLOCK_N) * BLOCK_N
    sink_hi = tl.minimum(sink_hi, window_lo)                 # blocks from window_lo on are the window's
    ### END SOLUTION
    return sink_hi, window_lo, window_hi


# %% nbgrader={"grade": false, "grade_id": "kernel", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.tma import is_hopper_or_newer, tile_descriptor, tma_ready
from autograder.validation import check_attention_inputs


@triton.jit
def _attend_blocks(acc, l_i, m_i, n_visits, q, kt_ptrs, v_ptrs, stride_kn, stride_vn, q_idx,
                   lo, hi, seq_len, window_size, sink_size, qk_scale,
                   BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    """Fold the key blocks starting at lo, lo + BLOCK_N, ... (below hi) into the running softmax.

    MASKED=False is only for blocks whose every key is visible to every query of the block:
    they need neither bounds checks nor the mask, which is where a windowed kernel spends
    most of its time on long windows.
    """
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        key_idx = start_n + offs_n
        if MASKED:
            in_seq = key_idx < seq_len
            kt = tl.load(kt_ptrs + start_n * stride_kn, mask=in_seq[None, :], other=0.0)
            v = tl.load(v_ptrs + start_n * stride_vn, mask=in_seq[:, None], other=0.0)
            s = tl.dot(q, kt) * qk_scale
            s = tl.where(visible(q_idx, key_idx, window_size, sink_size), s, float("-inf"))
        else:
            kt = tl.load(kt_ptrs + start_n * stride_kn)
            v = tl.load(v_ptrs + start_n * stride_vn)
            s = tl.dot(q, kt) * qk_scale
        acc, l_i, m_i = online_softmax_update(acc, l_i, m_i, s, v)
        n_visits += 1
    return acc, l_i, m_i, n_visits


@triton.jit
def _attend_blocks_tma(acc, l_i, m_i, n_visits, q, desc_k, desc_v, off_b, off_kv, q_idx,
                       lo, hi, seq_len, window_size, sink_size, qk_scale,
                       BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr):
    """The same, with K/V tiles fetched through tensor descriptors (Hopper and newer): keys past
    the end of the sequence arrive as zeros, so only the mask differs between the two kinds of block."""
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        k = desc_k.load([off_b, off_kv, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        v = desc_v.load([off_b, off_kv, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        s = tl.dot(q, k.T) * qk_scale
        if MASKED:
            s = tl.where(visible(q_idx, start_n + offs_n, window_size, sink_size), s, float("-inf"))
        acc, l_i, m_i = online_softmax_update(acc, l_i, m_i, s, v)
        n_visits += 1
    return acc, l_i, m_i, n_visits


@triton.jit
def _segments(q_start, seq_len, window_size, sink_size, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Your ranges, cut into the five segments a program walks: (0, sink_full, sink_hi) for the
    sinks and (window_lo, full_lo, full_hi, window_hi) for the window; the blocks of
    [0, sink_full) and [full_lo, full_hi) are seen whole by every query of the block."""
    sink_hi, window_lo, window_hi = key_block_ranges(q_start, seq_len, window_size, sink_size, BLOCK_M, BLOCK_N)
    # Sink blocks that end at or before both sink_size and q_start + 1, and window blocks that
    # start at or after the last query's window start and end at or before q_start + 1.
    sink_full = tl.minimum(tl.minimum(sink_size // BLOCK_N, (q_start + 1) // BLOCK_N) * BLOCK_N, sink_hi)
    sink_full = tl.maximum(sink_full, 0)
    full_lo = tl.cdiv(tl.maximum(q_start + BLOCK_M - window_size, 0), BLOCK_N) * BLOCK_N
    full_lo = tl.minimum(tl.maximum(full_lo, window_lo), tl.maximum(window_hi, window_lo))
    full_hi = tl.minimum(tl.maximum(((q_start + 1) // BLOCK_N) * BLOCK_N, full_lo), tl.maximum(window_hi, full_lo))
    return sink_full, sink_hi, window_lo, full_lo, full_hi, window_hi


@triton.jit
def _flash_attention_window_kernel(
    Q, K, V, O, LSE, VISITS,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    n_heads, group_size, seq_len, window_size, sink_size, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, COUNT_VISITS: tl.constexpr,
):
    # One program computes BLOCK_M query rows of one (batch, query head).
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = (off_bh // n_heads).to(tl.int64)        # int64: B*H*L*D can pass 2**31
    off_h = (off_bh % n_heads).to(tl.int64)
    off_kv = off_h // group_size                    # grouped-query attention: K/V are shared, never copied

    q_start = start_m * BLOCK_M
    q_idx = q_start + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + q_idx[:, None] * stride_qm + offs_d[None, :] * stride_qd
    kt_ptrs = K + off_b * stride_kb + off_kv * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    v_ptrs = V + off_b * stride_vb + off_kv * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd

    q = tl.load(q_ptrs, mask=q_idx[:, None] < seq_len, other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    n_visits = tl.full([], 0, dtype=tl.int32)

    # Your ranges decide which blocks are visited at all; inside them, whole blocks run unmasked.
    sink_full, sink_hi, window_lo, full_lo, full_hi, window_hi = _segments(
        q_start, seq_len, window_size, sink_size, BLOCK_M, BLOCK_N)

    # 1. The sink loop: [0, sink_hi), its whole blocks first.
    acc, l_i, m_i, n_visits = _attend_blocks(acc, l_i, m_i, n_visits, q, kt_ptrs, v_ptrs, stride_kn, stride_vn,
                                             q_idx, 0, sink_full, seq_len, window_size, sink_size, qk_scale,
                                             BLOCK_N, MASKED=False)
    acc, l_i, m_i, n_visits = _attend_blocks(acc, l_i, m_i, n_visits, q, kt_ptrs, v_ptrs, stride_kn, stride_vn,
                                             q_idx, sink_full, sink_hi, seq_len, window_size, sink_size, qk_scale,
                                             BLOCK_N, MASKED=True)
    # 2. The window loop: [window_lo, window_hi) = window edge (masked), whole blocks, diagonal (masked).
    acc, l_i, m_i, n_visits = _attend_blocks(acc, l_i, m_i, n_visits, q, kt_ptrs, v_ptrs, stride_kn, stride_vn,
                                             q_idx, window_lo, full_lo, seq_len, window_size, sink_size, qk_scale,
                                             BLOCK_N, MASKED=True)
    acc, l_i, m_i, n_visits = _attend_blocks(acc, l_i, m_i, n_visits, q, kt_ptrs, v_ptrs, stride_kn, stride_vn,
                                             q_idx, full_lo, full_hi, seq_len, window_size, sink_size, qk_scale,
                                             BLOCK_N, MASKED=False)
    acc, l_i, m_i, n_visits = _attend_blocks(acc, l_i, m_i, n_visits, q, kt_ptrs, v_ptrs, stride_kn, stride_vn,
                                             q_idx, full_hi, window_hi, seq_len, window_size, sink_size, qk_scale,
                                             BLOCK_N, MASKED=True)

    o, lse = finalize(acc, l_i, m_i)
    o_ptrs = O + off_b * stride_ob + off_h * stride_oh + q_idx[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, o.to(O.dtype.element_ty), mask=q_idx[:, None] < seq_len)
    tl.store(LSE + off_bh.to(tl.int64) * seq_len + q_idx, lse, mask=q_idx < seq_len)
    if COUNT_VISITS:
        # For grading: how many key blocks this program folded in (one slot per program).
        tl.atomic_add(VISITS + off_bh * tl.num_programs(0) + start_m, n_visits)


@triton.jit
def _flash_attention_window_kernel_tma(
    desc_q, desc_k, desc_v, desc_o, LSE, VISITS,
    n_heads, group_size, seq_len, window_size, sink_size, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, COUNT_VISITS: tl.constexpr,
    OUT_DTYPE: tl.constexpr,
):
    # The program above with tensor descriptors for the tiles (Hopper and newer).
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = off_bh // n_heads
    off_h = off_bh % n_heads
    off_kv = off_h // group_size
    q_start = start_m * BLOCK_M
    q_idx = q_start + tl.arange(0, BLOCK_M)

    q = desc_q.load([off_b, off_h, q_start, 0]).reshape(BLOCK_M, HEAD_DIM)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    n_visits = tl.full([], 0, dtype=tl.int32)
    sink_full, sink_hi, window_lo, full_lo, full_hi, window_hi = _segments(
        q_start, seq_len, window_size, sink_size, BLOCK_M, BLOCK_N)

    acc, l_i, m_i, n_visits = _attend_blocks_tma(acc, l_i, m_i, n_visits, q, desc_k, desc_v, off_b, off_kv, q_idx,
                                                 0, sink_full, seq_len, window_size, sink_size, qk_scale,
                                                 BLOCK_N, HEAD_DIM, MASKED=False)
    acc, l_i, m_i, n_visits = _attend_blocks_tma(acc, l_i, m_i, n_visits, q, desc_k, desc_v, off_b, off_kv, q_idx,
                                                 sink_full, sink_hi, seq_len, window_size, sink_size, qk_scale,
                                                 BLOCK_N, HEAD_DIM, MASKED=True)
    acc, l_i, m_i, n_visits = _attend_blocks_tma(acc, l_i, m_i, n_visits, q, desc_k, desc_v, off_b, off_kv, q_idx,
                                                 window_lo, full_lo, seq_len, window_size, sink_size, qk_scale,
                                                 BLOCK_N, HEAD_DIM, MASKED=True)
    acc, l_i, m_i, n_visits = _attend_blocks_tma(acc, l_i, m_i, n_visits, q, desc_k, desc_v, off_b, off_kv, q_idx,
                                                 full_lo, full_hi, seq_len, window_size, sink_size, qk_scale,
                                                 BLOCK_N, HEAD_DIM, MASKED=False)
    acc, l_i, m_i, n_visits = _attend_blocks_tma(acc, l_i, m_i, n_visits, q, desc_k, desc_v, off_b, off_kv, q_idx,
                                                 full_hi, window_hi, seq_len, window_size, sink_size, qk_scale,
                                                 BLOCK_N, HEAD_DIM, MASKED=True)

    o, lse = finalize(acc, l_i, m_i)
    desc_o.store([off_b, off_h, q_start, 0], o.to(OUT_DTYPE).reshape(1, 1, BLOCK_M, HEAD_DIM))
    tl.store(LSE + off_bh.to(tl.int64) * seq_len + q_idx, lse, mask=q_idx < seq_len)
    if COUNT_VISITS:
        tl.atomic_add(VISITS + off_bh * tl.num_programs(0) + start_m, n_visits)


def _launch_config(q):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages): 64x64 tiles with 4 warps at every head dim.

    Smaller query blocks than problem 3's: the window's edge and the diagonal cut through the first
    and last tiles of every program, and the smaller the tiles, the less of them is work the mask
    throws away. On an H100 at W = 1024, L = 16k (scripts/tune_kernels.py --problem problem6), 64x64
    with 4 warps was the fastest of BLOCK_M, BLOCK_N in {64, 128}, 4 or 8 warps, 2 or 3 stages:
    at D = 128 367 TFLOPS with tensor descriptors (128x64 with 8 warps: 330; pointers: 321), at
    D = 64 311 with 2 stages and 299 with 3, a difference within the run-to-run spread. Before
    Hopper, 2 stages at D = 128 (80 KB of shared memory rather than 112) fit Ada GPUs' 100 KB.
    """
    return 64, 64, 4, (2 if q.shape[-1] == 128 and not is_hopper_or_newer(q) else 3)


def flash_attention_window(q, k, v, window_size, sink_size=0, _visits=None, *, config=None, tma=True):
    """Causal attention with a sliding window and attention sinks, for (B, H, L, D) tensors.

    Query i attends to keys i - window_size + 1 .. i and to keys 0 .. sink_size - 1 that are
    not after it. k and v may have fewer heads than q (grouped-query attention): query head h
    reads K/V head h // (H_q // H_kv). Returns (o, lse): o like q, lse float32 (B, H_q, L) in
    natural log. Pass a dict as `_visits` to get the number of key blocks each program visited
    (`counts`, shape (B * H_q, number of query blocks)) and the block sizes.
    For sweeps (scripts/tune_kernels.py): `config` = (BLOCK_M, BLOCK_N, num_warps, num_stages)
    replaces _launch_config(q), and `tma=False` takes the pointer kernel on a Hopper GPU too.
    """
    check_attention_inputs(q, k, v, allow_gqa=True)
    batch, n_heads, seq_len, head_dim = q.shape
    if k.shape[2] != seq_len:
        raise ValueError(f"q has {seq_len} positions but k/v have {k.shape[2]}; a causal window needs Lq == Lk")
    if int(window_size) < 1 or int(sink_size) < 0:
        raise ValueError(f"need window_size >= 1 and sink_size >= 0, got {window_size} and {sink_size}")
    o = torch.empty_like(q)
    lse = torch.empty((batch, n_heads, seq_len), device=q.device, dtype=torch.float32)
    block_m, block_n, num_warps, num_stages = config or _launch_config(q)
    grid = (triton.cdiv(seq_len, block_m), batch * n_heads)
    visits = lse  # a placeholder pointer: the counting code is compiled only when COUNT_VISITS
    if _visits is not None:
        visits = torch.zeros(grid[1], grid[0], device=q.device, dtype=torch.int32)
        _visits.update(counts=visits, block_m=block_m, block_n=block_n)
    qk_scale = LOG2_E / math.sqrt(head_dim)  # fold the softmax scale into exp2
    if tma and tma_ready(q, k, v, o):
        _flash_attention_window_kernel_tma[grid](
            tile_descriptor(q, block_m), tile_descriptor(k, block_n), tile_descriptor(v, block_n),
            tile_descriptor(o, block_m), lse, visits,
            n_heads, n_heads // k.shape[1], seq_len, int(window_size), int(sink_size), qk_scale,
            HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, COUNT_VISITS=_visits is not None,
            OUT_DTYPE=tl.bfloat16 if q.dtype == torch.bfloat16 else tl.float16,
            num_warps=num_warps, num_stages=num_stages,
        )
        return o, lse
    _flash_attention_window_kernel[grid](
        q, k, v, o, lse, visits,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        n_heads, n_heads // k.shape[1], seq_len, int(window_size), int(sink_size), qk_scale,
        HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, COUNT_VISITS=_visits is not None,
        num_warps=num_warps, num_stages=num_stages,
    )
    return o, lse


# %% [markdown]
# ### Check as you go, and a hint when you are stuck
#
# Run the next cell after every change to your cell (run the *Your code* cell and the kernel cell
# again first, so that the kernel picks up your edit). It runs the visible inputs of section 6:
# the output and log-sum-exp for two window/sink combinations (one with grouped-query attention),
# then the number of key blocks each program visits. A wrong case comes with the first bad
# (batch, head, row) and the likely cause: the grader re-enacts the typical mistakes of this
# problem (a window one key too wide or too narrow, sinks ignored or seen from the future, a sink
# block visited twice, the window not applied) and names the one your output matches exactly.
#
# If you are stuck, the cell after it is a hint ladder: each run reveals one more step, two
# nudges first and then the idea of the solution in words (never the code).
# `hint("problem6", 1)` shows a step again.

# %% nbgrader={"grade": false, "grade_id": "self_check", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem6 import check

check(flash_attention_window)  # the visible inputs, with the grader's diagnosis when one is wrong

# %% nbgrader={"grade": false, "grade_id": "hints", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.hints import hint

hint("problem6");  # each run reveals the next step

# %% [markdown]
# ## 6. Check your work
#
# Each value check prints one line per test input: `PASS` or `FAIL`, the largest error against a
# float64 reference, and for a failure *where* it goes wrong and the most likely cause. The
# tolerance is a few units in the last place of the dtype (about $2\cdot10^{-3}$ for float16,
# $1.6\cdot10^{-2}$ for bfloat16). The visit check prints how many tiles the kernel visited out
# of all of them, and for a failure which program visited which blocks too many (or too few).

# %% nbgrader={"grade": true, "grade_id": "test_window_values", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem6 import assert_window_cases

# A window of 128 keys with 4 sinks, then a window of 16 with 1 sink under grouped-query attention
# (4 query heads share 2 K/V heads); L = 200 ends inside a block. Output and log-sum-exp.
assert_window_cases(flash_attention_window, [
    Case(1, 2, 256, 64, window=128, sink=4, seed=1),
    Case(1, 4, 200, 32, H_kv=2, window=16, sink=1, seed=2),
])

# %% nbgrader={"grade": true, "grade_id": "test_block_visits", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem6 import check_visits

# Each program visits exactly the key blocks that hold a key one of its queries may see, once each.
check_visits(flash_attention_window, [
    Case(1, 1, 300, 16, window=16, sink=64),
    Case(1, 1, 256, 16, window=128, sink=4),
])

# %% [markdown]
# ### What the grader also checks
#
# The cells below hold tests you cannot see. They check, in this order: windows on and around
# block boundaries ($W$ = 1, 16, 127, 128 and 1000, including $W \ge L$) without sinks, on sequences
# that end inside a block; sinks ($S$ = 1, 4, 64 and more than $L$) with sinks inside and outside
# the window, on either side of a block boundary; grouped-query attention with 1, 2 and 4 query
# heads per K/V head, bfloat16 as well as float16, and inputs that are not contiguous in memory;
# the log-sum-exp on its own; and the block visits for all the window/sink combinations above.

# %% nbgrader={"grade": true, "grade_id": "test_hidden_windows", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem6 import assert_window_cases

# Hidden: Windows on and around block boundaries (W = 1, 2, 16, 127, 128, 1000 >= L), no sinks. With
# W = 2 a query block's window starts on the last key of the block before it, whatever the tiles.
### BEGIN HIDDEN TESTS
assert_window_cases(flash_attention_window, [
    Case(1, 2, 200, 32, window=1, sink=0, seed=10),
    Case(1, 2, 200, 32, window=2, sink=0, seed=17),
    Case(1, 2, 300, 64, window=16, sink=0, seed=11),
    Case(1, 1, 257, 64, window=127, sink=0, seed=12),
    Case(1, 2, 256, 32, window=128, sink=0, seed=13),
    Case(1, 1, 130, 64, window=1000, sink=0, seed=14),
    Case(1, 1, 65, 16, window=64, sink=0, seed=15),
    Case(2, 1, 1, 16, window=16, sink=0, seed=16),
], check_lse=False)
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_sinks", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem6 import assert_window_cases

# Hidden: Sinks (S = 1, 4, 64, > L) inside and outside the window, on either side of a block boundary.
### BEGIN HIDDEN TESTS
assert_window_cases(flash_attention_window, [
    Case(1, 2, 300, 32, window=16, sink=4, seed=20),
    Case(1, 1, 300, 64, window=1, sink=64, seed=21),
    Case(1, 2, 257, 16, window=127, sink=65, seed=22),
    Case(1, 1, 200, 32, window=16, sink=1, seed=23),
    Case(1, 1, 200, 16, window=128, sink=64, seed=24),
    Case(1, 1, 100, 64, window=8, sink=1000, seed=25),
], check_lse=False)
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_gqa_dtypes", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem6 import assert_window_cases

# Hidden: Grouped-query attention (Hq/Hkv = 1, 2, 4), bfloat16 and float16, contiguous or not.
### BEGIN HIDDEN TESTS
assert_window_cases(flash_attention_window, [
    Case(1, 4, 200, 64, "bfloat16", H_kv=1, window=128, sink=4, seed=30),
    Case(2, 4, 160, 32, "float16", "bshd", H_kv=2, window=16, sink=4, seed=31),
    Case(1, 2, 192, 128, "bfloat16", "strided_d", window=127, sink=1, seed=32),
    Case(1, 4, 256, 16, H_kv=4, window=64, sink=64, seed=33),
], check_lse=False)
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_lse", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem6 import assert_window_cases

# Hidden: The log-sum-exp, in natural log, over the visible keys only.
### BEGIN HIDDEN TESTS
assert_window_cases(flash_attention_window, [
    Case(1, 2, 200, 64, window=16, sink=4, seed=40),
    Case(1, 1, 1, 16, window=1, sink=1, seed=41),
    Case(1, 4, 300, 32, H_kv=1, window=128, sink=64, seed=42),
], check_output=False)
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_visits", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem6 import check_visits

# Hidden: Block visits for windows and sinks around block boundaries, W >= L, GQA.
### BEGIN HIDDEN TESTS
check_visits(flash_attention_window, [
    Case(1, 1, 300, 16, window=1, sink=0),
    Case(1, 1, 300, 16, window=2, sink=0),
    Case(1, 1, 300, 16, window=16, sink=1),
    Case(1, 1, 300, 16, window=127, sink=4),
    Case(1, 1, 300, 16, window=128, sink=64),
    Case(1, 1, 257, 16, window=128, sink=65),
    Case(1, 1, 200, 16, window=1000, sink=4),
    Case(2, 2, 200, 16, H_kv=1, window=64, sink=4),
])
### END HIDDEN TESTS

# %% [markdown]
# ## 7. How fast is it?
#
# On a GPU the next cell times your kernel at a fixed window ($W = 1024$, $S = 4$, bfloat16) for
# $L$ = 4k, 16k and 64k tokens, next to two ways of getting the same numbers from PyTorch, all in
# the same run with `triton.testing.do_bench` medians:
#
# * **FlexAttention** (`torch.nn.attention.flex_attention`, compiled with `torch.compile` as its
#   documentation asks) with the same mask as a *block mask* (`create_block_mask`): it, too,
#   skips the tiles the mask hides, so it is the fair peer;
# * **SDPA with a dense boolean mask** ($L \times L$, memory-efficient backend pinned): it reads the
#   mask for every tile and skips nothing, so its time grows with $L^2$, and at 64k tokens the mask
#   alone takes gigabytes (the cell skips it, with the reason, when it does not fit).
#
# TFLOPS count only the (query, key) pairs the mask lets through, so a kernel that skips well
# keeps its TFLOPS flat as $L$ grows, and its time grows about 4x for 4x the tokens. On the CPU
# interpreter there is nothing meaningful to time, and the cell says so; where the installed torch
# has no FlexAttention, the cell says that too and times the rest.

# %% nbgrader={"grade": false, "grade_id": "benchmark", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem6 import benchmark

benchmark(flash_attention_window)

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
from autograder.problems.problem6 import performance_points

# Performance: your kernel's time over the reference kernel's, on the same GPU in the same run.
# Ratio <= 1.3 earns both points, <= 1.6 one; a kernel that fails the self-check earns none.
# Under the CPU interpreter the ratio measures how much work the kernel does, not GPU speed.
performance_points(flash_attention_window)

# %% [markdown] nbgrader={"grade": false, "grade_id": "outro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 8. What you built, and what comes next
#
# Your kernel computes causal attention with a sliding window and attention sinks, for grouped-query
# heads, in $O\bigl(L(W+S)\bigr)$ time and $O(L)$ memory: each program reads its window and its
# sinks once, and nothing else. Two small functions decided all of it: the mask of one tile, and
# the two ranges of blocks a program walks. The same pattern (a mask for the tiles that need one,
# ranges that skip the ones it hides, and no tile twice) carries over to any block-sparse
# attention: document masks for packed sequences, prefix-LM masks, chunked local attention.
# FlexAttention generalises exactly this: a `mask_mod` is your `visible`, and its block mask is
# your `key_block_ranges`, computed ahead of time for every program.
