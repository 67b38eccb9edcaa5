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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/flash-attention-course/flash-attention-course/blob/main/notebooks/problem1/problem1.ipynb)
#
# Runs in Colab (GPU or CPU), on a laptop without a GPU, or on a GPU machine: [how to start, and what each can do](https://github.com/flash-attention-course/flash-attention-course/blob/main/README.md#start).

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Problem 1 · Attention in PyTorch, and why it does not scale
#
# Every attention kernel in this course is checked against one function: attention written out in
# PyTorch, score matrix and all. In this chapter you write that function yourself, with everything the
# later kernels need (the log-sum-exp, causal masks, sliding windows with attention sinks, grouped-query
# attention), and then you measure it until it breaks: its memory grows with the square of the sequence
# length, and you will see where a GPU runs out.
#
# **You will learn** what attention computes, row by row; what the log-sum-exp is and why kernels keep
# it; how causal, sliding-window and sink masks come from two index comparisons; how grouped-query
# attention shares key/value heads; and how to predict, and then measure, the memory a PyTorch function
# needs.
#
# **How this notebook works.** Run the cells from the top. The first cell sets up the course package.
# You edit one cell, marked *Your code*: three plain Python functions that use `torch` and `math`. The
# check cells below it tell you what is wrong and why; the grader runs more checks of the same kind on
# inputs you do not see. Everything here runs on a laptop CPU in seconds; on a GPU, the last two sections
# also show real memory limits and timings.

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
# ## 1. Attention, one row at a time
#
# For one head, with queries $Q \in \mathbb{R}^{L_q \times D}$, keys $K \in \mathbb{R}^{L_k \times D}$
# and values $V \in \mathbb{R}^{L_k \times D}$,
#
# $$S = \frac{QK^\top}{\sqrt{D}}, \qquad P = \operatorname{softmax}(S) \text{ (row by row)}, \qquad O = PV .$$
#
# Row $i$ of the output is a weighted average of the values,
#
# $$o_i = \sum_j p_{ij}\, v_j, \qquad p_{ij} = \frac{e^{s_{ij}}}{\sum_{j'} e^{s_{ij'}}},$$
#
# with weights that say how well query $i$ matches each key. **Why $1/\sqrt{D}$:** if the entries of a
# query and a key are independent with variance 1, their dot product has variance $D$; dividing by
# $\sqrt{D}$ keeps the scores near unit scale whatever the head dimension, so the softmax does not
# collapse onto a single key.
#
# **The log-sum-exp.** For each row, $\ell_i = \log \sum_j e^{s_{ij}}$ (natural log). It is the one
# number that turns any score of the row back into its probability, $p_{ij} = e^{s_{ij} - \ell_i}$, so a
# backward pass keeps $\ell$ (a vector of length $L_q$) instead of $P$ (an $L_q \times L_k$ matrix):
# every FlashAttention kernel in this course returns it. It is computed stably as
# $m_i + \log \sum_j e^{s_{ij} - m_i}$ with $m_i = \max_j s_{ij}$, which is what `torch.logsumexp` does.
# The course's convention: natural log, float32, shape $(B, H, L_q)$. (The Triton tutorial's kernel
# stores a base-2 value instead; the checks here would notice.)
#
# **Precision.** Inputs arrive in float16 (or bfloat16, or float32). A GPU kernel multiplies 16-bit
# numbers but adds them up in float32; do the same here. Compute the scores in float32 and keep them in
# float32 through the mask, the log-sum-exp and the softmax; round only the probabilities, to the input
# dtype, right before $P V$, and return $O$ in the input dtype. Scores rounded to float16 carry a
# relative error of $2^{-11}$ each, which inside the exponent uses up about half of the tolerance the
# checks allow.

# %% [markdown]
# ## 2. Masks: causal, sliding window, attention sinks
#
# A language model predicts token $i$ from the tokens before it, so query $i$ may only look at keys
# $j \le i$: the **causal** mask. Two refinements from recent models build on it:
#
# * a **sliding window** of $W$ keys (Mistral, Gemma): query $i$ sees only the $W$ most recent keys,
#   itself included, $\;i - (W-1) \le j \le i$;
# * **attention sinks** (StreamingLLM): the first $S$ keys stay visible to every query that comes after
#   them, $\;j < S$ and $j \le i$. Trained models park a lot of attention on the first tokens; a window
#   that slides past them degrades the model, keeping them fixes it.
#
# Together, key $j$ is visible to query $i$ when
#
# $$ (j \le i) \;\wedge\; \bigl( j \ge i - (W-1) \;\vee\; j < S \bigr).$$
#
# Every row keeps at least its own key ($W \ge 1$), so no row is left without a visible key. A hidden key
# gets the score $-\infty$ before the softmax: $e^{-\infty} = 0$, so it gets weight exactly zero, and
# it drops out of the log-sum-exp too.
#
# The API follows the seed code of this course: with `is_causal=False` there is no mask at all (the window
# and sink arguments are ignored); with `is_causal=True`, `window_size=None` means $W = L$ (plain causal)
# and `sink_size=None` means $S = 0$.
#
# The pictures below are drawn from the grader's own mask function. Blue cells are visible keys. The grid
# and the hatched tiles are for later: a blocked kernel visits only the hatched tiles, which is what
# problems 4 and 6 are about. Your PyTorch version computes every tile, hidden or not.

# %% nbgrader={"grade": false, "grade_id": "plot_masks", "locked": true, "schema_version": 3, "solution": false, "task": false}
import matplotlib.pyplot as plt

from autograder.plots import plot_mask

fig, axes = plt.subplots(1, 3, figsize=(15, 5))
plot_mask(32, block_m=8, block_n=8, ax=axes[0])
plot_mask(32, window=8, block_m=8, block_n=8, ax=axes[1])
plot_mask(32, window=8, sink=4, block_m=8, block_n=8, ax=axes[2])
plt.show()

# %% [markdown]
# ## 3. Grouped-query attention
#
# In grouped-query attention (GQA), $H_q$ query heads share $H_{kv}$ key/value heads, with
# $H_q = g \cdot H_{kv}$. Llama 3 70B, for example, has 64 query heads and 8 K/V heads, which makes the
# K/V cache a model keeps during generation 8 times smaller. The heads are shared in consecutive groups:
# query head $h$ reads K/V head
#
# $$ h_{kv} = \left\lfloor \frac{h}{g} \right\rfloor, \qquad g = H_q / H_{kv},$$
#
# so query heads $0, \dots, g-1$ share K/V head 0, the next $g$ share head 1, and so on (not
# $h \bmod H_{kv}$, which would interleave them). In PyTorch the simple way is to repeat each K/V head
# $g$ times in a row and then run ordinary attention; problem 5's kernel reads the shared head without
# making copies.

# %% [markdown]
# ## 4. How big is $S$?
#
# There is one score per batch element, head, query and key: $B \cdot H \cdot L^2$ numbers. The
# arithmetic, $4BHL^2D$ floating-point operations, is not what stops naive attention; its memory is. For
# one sequence ($B = 1$) of a 16-head layer at $L = 32\,768$ tokens, $S$ alone is
# $16 \cdot 2^{30}$ scores, **32 GiB in float16**. And a straightforward implementation keeps more than
# one matrix of that size alive at once: the scores, the probabilities, a rounded copy of them. Which
# ones, and in which dtype, depends on how you write it; section 7 measures your own function.
#
# `score_matrix_bytes(batch, heads, seq_len, dtype)` in the next cell is the yardstick: the bytes of one
# $(B, H, L, L)$ tensor of `dtype` (`dtype.itemsize` is the number of bytes of one element).

# %% [markdown]
# ## 5. Your code
#
# Write three functions in the next cell.
#
# * `create_mask_bool(seq_len, window_size, sink_size, device=None)`: an `(L, L)` tensor of `torch.bool`,
#   true where query $i$ (row) may see key $j$ (column), by the rule of section 2. No loops needed:
#   `torch.arange` and broadcasting an `(L, 1)` column against a `(1, L)` row give the whole grid.
# * `naive_attention(q, k, v, is_causal=False, window_size=None, sink_size=None)`: returns `(o, lse)`.
#   `q` is `(B, Hq, Lq, D)`, `k` and `v` are `(B, Hkv, Lk, D)` with `Hq` a multiple of `Hkv`; without a
#   mask `Lq` may differ from `Lk`. `o` is like `q` (same shape and dtype); `lse` is float32,
#   `(B, Hq, Lq)`, natural log. The inputs may be views that are not contiguous in memory: `@`,
#   `transpose` and `reshape` handle any strides, `view` does not.
# * `score_matrix_bytes(batch, heads, seq_len, dtype)`: the bytes of one `(B, H, L, L)` tensor of `dtype`,
#   as an `int`.
#
# `torch` and `math` are imported for you. Keep the cell to plain functions (and constants, if you want
# any): no imports, no other statements. When grading, the tests run in a fresh interpreter that holds
# only the course's cells and this one, not in this notebook: their verdicts are your points, and your
# feedback shows them under each test cell. Do not call PyTorch's own attention (`scaled_dot_product_attention` and friends): the checks
# look for it and give no points for it.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math

import torch


# %% nbgrader={"grade": false, "grade_id": "attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def create_mask_bool(seq_len, window_size, sink_size, device=None):
    """(seq_len, seq_len) torch.bool, True where query i (row) may attend to key j (column):
    j <= i and (i - (window_size - 1) <= j or j < sink_size)."""
    ### BEGIN SOLUTION
    idx = torch.arange(seq_len, device=device)
    row = idx[:, None]  # query i, down the rows
    col = idx[None, :]  # key j, along the columns
    in_window = col >= row - (window_size - 1)
    is_sink = col < sink_size
    return (col <= row) & (in_window | is_sink)
    ### END SOLUTION


def naive_attention(q, k, v, is_causal=False, window_size=None, sink_size=None):
    """softmax(q k^T / sqrt(D)) v with the L x L score matrix in memory.

    q: (B, Hq, Lq, D); k, v: (B, Hkv, Lk, D), Hq a multiple of Hkv (query head h reads K/V head
    h // (Hq // Hkv)). With is_causal, the mask of create_mask_bool (window_size None: the whole
    past; sink_size None: no sinks). Returns (o, lse): o like q, lse float32 (B, Hq, Lq), natural log.
    """
    ### BEGIN SOLUTION
    head_dim = q.shape[-1]
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        # Consecutive query heads share a K/V head: repeat each K/V head `groups` times in place.
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    # Scores in float32, as a kernel's tensor cores accumulate them.
    s = (q.float() @ k.float().transpose(-1, -2)) * (1.0 / math.sqrt(head_dim))
    if is_causal:
        seq_len = q.shape[2]
        window = seq_len if window_size is None else window_size
        mask = create_mask_bool(seq_len, window, sink_size or 0, device=q.device)
        s.masked_fill_(~mask, float("-inf"))  # in place: s is ours, and a copy would cost another L x L
    lse = torch.logsumexp(s, dim=-1)
    p = torch.softmax(s, dim=-1)
    o = p.to(q.dtype) @ v  # probabilities rounded once to the input dtype, as a kernel does
    return o, lse
    ### END SOLUTION


def score_matrix_bytes(batch, heads, seq_len, dtype):
    """Bytes of one (batch, heads, seq_len, seq_len) tensor of `dtype`."""
    ### BEGIN SOLUTION
    return batch * heads * seq_len * seq_len * dtype.itemsize
    ### END SOLUTION


# %% [markdown]
# ### Check as you go, and a hint when you are stuck
#
# Run the next cell after every change to your cell (run the *Your code* cell again first). It checks
# your three functions on the visible inputs of section 6 (full attention, grouped-query heads, a causal
# mask, a window with sinks; the masks; the byte count) and gives the same diagnosis the grader gives:
# for a wrong case, the first bad (batch, head, row) and the likely cause.
#
# If you are stuck, the cell after it is a hint ladder: each run reveals one more step, two nudges first
# and then the idea of the solution in words (never the code). `hint("problem1", 1)` shows a step again.

# %% nbgrader={"grade": false, "grade_id": "self_check", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem1 import check

check(naive_attention, create_mask_bool, score_matrix_bytes)  # the grader's diagnosis when one is wrong

# %% nbgrader={"grade": false, "grade_id": "hints", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.hints import hint

hint("problem1");  # each run reveals the next step

# %% [markdown]
# ## 6. Check your work
#
# Each check prints one line per test input: `PASS` or `FAIL`, the largest error against a float64
# reference (output, then log-sum-exp), and for a failure *where* it goes wrong and the most likely cause.
# The tolerance is a few units in the last place of the dtype: about $10^{-4}$ for float32 and
# $2\cdot10^{-3}$ for float16. Cases without a mask call `naive_attention(q, k, v)`; masked cases call it
# with `is_causal=True` and, for windows and sinks, `window_size=` and `sink_size=`.

# %% nbgrader={"grade": true, "grade_id": "test_create_mask", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem1 import assert_masks

# (L, W, S): plain causal (W = L), a window, a window with sinks, a window of a single key.
assert_masks(create_mask_bool, [(6, 6, 0), (6, 3, 0), (6, 3, 1), (8, 3, 2), (5, 1, 0)])

# %% nbgrader={"grade": true, "grade_id": "test_full_attention", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem1 import assert_attention

# Full attention (no mask), output and log-sum-exp; the last case has 4 query heads sharing 2 K/V heads.
assert_attention(naive_attention, [
    Case(1, 2, 64, 32, "float32"),
    Case(2, 2, 100, 64, "float16", seed=1),
    Case(2, 4, 80, 32, "float16", H_kv=2, seed=2),
])

# %% nbgrader={"grade": true, "grade_id": "test_causal", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem1 import assert_attention

# is_causal=True: the plain causal mask, then a window of 8 keys with 2 sinks.
assert_attention(naive_attention, [
    Case(1, 2, 77, 32, "float32", causal=True, seed=3),
    Case(1, 2, 77, 32, "float16", causal=True, seed=4),
    Case(1, 2, 50, 16, "float32", window=8, sink=2, seed=5),
])

# %% nbgrader={"grade": true, "grade_id": "test_score_bytes", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem1 import assert_score_bytes

# One (B, H, L, L) score tensor, from a single float32 number to 32 heads at L = 131072 in bfloat16.
assert_score_bytes(score_matrix_bytes)

# %% [markdown]
# ### What the grader also checks
#
# The cells below hold tests you cannot see. They check, in this order: masks around their edges
# (windows of one key, of $L-1$, $L$ and more than $L$ keys; no sinks, one, a few, $L$ and more than $L$;
# a single token; float16 and float32); grouped-query attention with 1, 2 and 4 query heads per K/V head,
# with and without masks; awkward shapes (a single token, lengths such as 17 and 333, more or fewer keys
# than queries, head dimensions from 16 to 128) and inputs that are not contiguous in memory; and
# `create_mask_bool` against the seed's on about 150 combinations of $(L, W, S)$. The log-sum-exp is
# checked everywhere. If the visible checks pass and your code follows the rules of sections 1 to 3
# exactly, these will pass too.

# %% nbgrader={"grade": true, "grade_id": "test_hidden_masks", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem1 import assert_attention

# Hidden: Windows and sinks around their edges (W of 1, L - 1, L, more than L; S up to more than L).
### BEGIN HIDDEN TESTS
assert_attention(naive_attention, [
    Case(1, 2, 1, 32, "float16", causal=True, seed=50),
    Case(1, 2, 40, 32, "float16", window=1, seed=51),
    Case(1, 2, 40, 32, "float32", window=1, sink=1, seed=52),
    Case(1, 2, 33, 16, "float16", window=2, sink=3, seed=53),
    Case(1, 2, 64, 32, "float16", window=63, seed=54),
    Case(2, 2, 64, 32, "float32", window=64, sink=4, seed=55),
    Case(1, 2, 64, 64, "float16", window=100, seed=56),
    Case(1, 2, 64, 16, "float16", window=16, sink=64, seed=57),
    Case(1, 2, 48, 32, "float32", window=5, sink=70, seed=58),
    Case(1, 2, 70, 32, "float16", sink=4, seed=59),
    Case(2, 3, 129, 64, "float16", "bshd", window=7, sink=2, seed=60),
])
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_gqa", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem1 import assert_attention

# Hidden: Grouped-query attention, 1, 2 and 4 query heads per K/V head, with and without masks.
### BEGIN HIDDEN TESTS
assert_attention(naive_attention, [
    Case(1, 4, 64, 32, "float16", H_kv=1, seed=70),
    Case(2, 4, 50, 32, "float32", H_kv=2, seed=71),
    Case(1, 4, 33, 64, "float32", H_kv=4, causal=True, seed=72),
    Case(1, 8, 70, 16, "float16", H_kv=2, causal=True, seed=73),
    Case(1, 4, 65, 32, "float16", H_kv=2, window=9, sink=2, seed=74),
    Case(1, 6, 40, 16, "float16", "bshd", H_kv=3, window=5, seed=75),
])
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_shapes", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem1 import assert_attention

# Hidden: Awkward lengths, more or fewer keys than queries, head dims 16 to 128, non-contiguous inputs.
### BEGIN HIDDEN TESTS
assert_attention(naive_attention, [
    Case(1, 1, 1, 64, "float16", seed=80),
    Case(2, 3, 17, 16, "float16", seed=81),
    Case(1, 2, 333, 64, "float16", seed=82),
    Case(1, 2, 130, 64, "float16", L_k=70, seed=83),
    Case(1, 2, 40, 32, "float32", L_k=200, seed=84),
    Case(2, 2, 128, 128, "float16", "bshd", seed=85),
    Case(1, 2, 96, 32, "float16", "strided_d", causal=True, seed=86),
    Case(1, 2, 150, 64, "float32", "bshd", causal=True, seed=87),
])
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_create_mask", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem1 import assert_masks

# Hidden: create_mask_bool against the seed's on many (L, W, S).
### BEGIN HIDDEN TESTS
assert_masks(create_mask_bool, sorted({
    (n, w, s) for n in (1, 2, 5, 16, 31, 64) for w in (1, 2, 3, n - 1, n, n + 3) for s in (0, 1, 2, n, n + 1)
    if w >= 1
}))
### END HIDDEN TESTS

# %% [markdown]
# ## 7. Watching it run out
#
# Now measure your own `naive_attention`. The next cell runs it for growing $L$ and records the **peak
# extra memory** of one call: everything the call allocates, at the moment when the most of it is alive.
#
# * On a GPU this is PyTorch's own counter: `torch.cuda.max_memory_allocated()` after
#   `torch.cuda.reset_peak_memory_stats()`, minus what was allocated before the call.
# * On the CPU PyTorch keeps no such counter, and Python's `tracemalloc` cannot help: tensor memory comes
#   from PyTorch's C++ allocator, so tracemalloc sees a few dozen bytes for a 40 MB tensor. The course's
#   tracker (`autograder.memory.PeakTensorMemory`) watches every PyTorch operation the call makes, adds
#   up the bytes of each new tensor storage, and subtracts them again when the last tensor using that
#   storage is freed.
#
# The table compares the measurement with your `score_matrix_bytes`, and the ratio column says how many
# score-sized matrices your function holds at its peak. On log-log axes a power law is a straight line
# whose slope is the exponent: expect 2. The right-hand plot extrapolates the measured bytes per score to
# one sequence of a 16-head layer in float16, next to the memory of an H100 (80 GiB) and a T4 (16 GiB).
# On a GPU the cell also tries one length past the predicted limit, to show the error for real.

# %% nbgrader={"grade": false, "grade_id": "memory", "locked": true, "schema_version": 3, "solution": false, "task": false}
import matplotlib.pyplot as plt

from autograder.problems.problem1 import memory_study

study = memory_study(naive_attention, score_matrix_bytes)
plt.show()

# %% [markdown]
# **Reading the numbers.** The reference solution holds its float32 scores, its float32 probabilities and
# their float16 copy at the same time: $4 + 4 + 2 = 10$ bytes per score, five times the float16 $S$ of
# section 4. (An out-of-place `masked_fill` would add another 4.) That puts its limit on an H100 near
# $L \approx 23\,000$ for a single 16-head sequence (measured there: $L = 16\,384$ takes 40 GiB, and
# $L = 32\,768$ fails with an out-of-memory error), and near $10\,000$ on a T4, while models now read
# 128 thousand tokens and more. Writing it more carefully moves the limit by a constant factor, never
# past the $L^2$: the way out is to never hold $S$ at all. Problem 2 shows that the softmax can be
# computed one block of keys at a time, and problem 3 turns that into a kernel whose memory grows with
# $L$, not $L^2$.

# %% [markdown]
# ## 8. How fast is it?
#
# On a GPU the next cell times your `naive_attention` against the course's reference version and
# PyTorch's `scaled_dot_product_attention` with two of its fused backends pinned (FlashAttention-2 and
# cuDNN), all in the same run, with `triton.testing.do_bench` medians. It reports TFLOPS ($4BHL^2D$ /
# time) and the peak memory of one call. On an H100 (B=1, H=16, D=64, bfloat16) the fused kernels were
# 15 to 25 times faster than the naive version from $L = 1024$ to $8192$, with a few MiB of extra memory
# where the naive version needed up to 10 GiB: it spends its time writing and reading $L \times L$
# matrices. On the CPU there is nothing meaningful to time, and the cell says so.

# %% nbgrader={"grade": false, "grade_id": "benchmark", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem1 import benchmark

benchmark(naive_attention)

# %% [markdown] nbgrader={"grade": false, "grade_id": "outro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 9. What you built, and what comes next
#
# You wrote the attention every later kernel is compared with: scores scaled by $1/\sqrt{D}$, the causal,
# sliding-window and sink masks from two index comparisons, grouped-query heads, and the log-sum-exp that
# a backward pass needs. You also measured its flaw: the $L \times L$ matrices, several of them, alive at
# once. From here on the course removes them. Problem 2 derives the online softmax, which needs only a
# running maximum and a running sum per query; problem 3 puts it into a Triton kernel, and problems 4 to 6
# bring back the causal mask, grouped-query attention and windows with sinks, each time visiting only the
# blocks of keys that a query can see.
