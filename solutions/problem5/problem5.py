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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/flash-attention-course/flash-attention-course/blob/main/notebooks/problem5/problem5.ipynb)
#
# Runs in Colab (GPU or CPU), on a laptop without a GPU, or on a GPU machine: [how to start, and what each can do](https://github.com/flash-attention-course/flash-attention-course/blob/main/README.md#start).

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Problem 5 · Grouped-query attention in Triton
#
# Large language models no longer give every query head its own keys and values. In
# **grouped-query attention** (GQA) a handful of K/V heads is shared by groups of query heads:
# Llama 3 70B has 64 query heads and 8 K/V heads, Mistral 7B has 32 and 8. The attention of one
# head is still the FlashAttention of problem 3; what changes is *which* K and V each head reads,
# and the rule that they are read where they are, never copied.
#
# **You will learn** why GQA exists (the memory of the KV cache), how a query head finds its
# K/V head, why the obvious shortcut of repeating K and V in memory throws the gain away, and how
# the order in which programs are launched decides whether the query heads of a group share K/V
# tiles in the GPU's L2 cache.
#
# **How this notebook works.** Run the cells from the top. The first cell picks the GPU, or
# Triton's CPU interpreter when there is no usable GPU. You edit one cell, marked *Your code*; the
# check cells below it tell you what is wrong and why, and the grader runs more checks of the same
# kind on shapes you do not see.

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
# ## 1. Why share keys and values?
#
# When a model generates text it keeps the keys and values of every token it has seen, the **KV
# cache**, so that each new token costs one attention row instead of recomputing the whole
# sequence. Its size is
#
# $$\text{KV cache} = 2 \times n_\text{layers} \times H_{kv} \times D \times L \times \text{bytes per value}.$$
#
# For Llama 3 70B ($80$ layers, $D = 128$, bf16) with $H_{kv} = 8$ that is $2 \cdot 80 \cdot 8
# \cdot 128 \cdot 2 = 320$ KiB per token: **40 GiB for one 128k-token context**. With one K/V head
# per query head ($H_{kv} = H_q = 64$, classic multi-head attention) it would be 320 GiB, more
# than four H100s hold. And while generating, every new token reads the whole cache from memory,
# so the time per token is set by its size too: sharing each K/V head among $G = H_q / H_{kv}$
# query heads divides both by $G$. Multi-query attention ($H_{kv} = 1$) is the extreme case; GQA
# with $G = 4$ or $8$ loses almost none of the quality of full multi-head attention (Ainslie et
# al., 2023).
#
# The kernel in this notebook is the **prefill** kernel: all queries of a sequence at once, as in
# training or when a prompt is first read. There the work is the matrix products, $4 B H_q L^2 D$
# flops whether the K/V heads are shared or not. So GQA cannot make this kernel faster; the goal is
# that it costs nothing: no extra memory, no extra time.

# %% [markdown]
# ## 2. Which query head reads which K/V head
#
# With $H_q$ query heads, $H_{kv}$ K/V heads and $G = H_q / H_{kv}$ (a whole number), the output of
# query head $h$ is
#
# $$O_h = \operatorname{softmax}\!\left(\frac{Q_h K_{j}^\top}{\sqrt{D}}\right) V_{j}, \qquad
# j = \left\lfloor h / G \right\rfloor .$$
#
# The $G$ query heads of a group are **neighbours**: heads $0, \dots, G-1$ read K/V head 0, heads
# $G, \dots, 2G-1$ read K/V head 1, and so on. This is what the models are trained with, and it is
# what PyTorch's reference does when it "repeats" K/V: `repeat_interleave(G, dim=1)` turns
# $[K_0, K_1]$ into $[K_0, K_0, K_0, K_0, K_1, K_1, K_1, K_1]$ for $G = 4$, so repeated head $h$ is
# $K_{\lfloor h/G \rfloor}$.
#
# The classic bug is $j = h \bmod H_{kv}$. It is what *tiling* would give ($[K_0, K_1, K_0, K_1,
# \dots]$, `k.repeat(1, G, 1, 1)`): the shapes are the same, every index is in range, nothing
# crashes, and the output is attention with the wrong keys. Only a check against the right answer
# finds it, and only when $H_{kv} > 1$ (with a single K/V head both rules give 0).
#
# The picture shows the right mapping, the bug, and (right) the order in which the kernel's
# programs are launched, explained in the next section.

# %% nbgrader={"grade": false, "grade_id": "plot_head_groups", "locked": true, "schema_version": 3, "solution": false, "task": false}
import matplotlib.pyplot as plt

from autograder.problems.problem5 import plot_head_groups

plot_head_groups(n_q_heads=8, n_kv_heads=2, n_m_blocks=3, n_programs=12)
plt.show()

# %% [markdown]
# ## 3. Reading K/V once per group: the launch order
#
# **Never repeat K and V.** The simplest GQA "kernel" is `k.repeat_interleave(G, dim=1)` followed
# by the multi-head kernel of problem 3. It gives the right numbers and allocates $G$ times the K/V
# memory on every call ($G - 1$ extra copies of the cache, the memory GQA exists to save), and it
# writes and reads all of it once more before the kernel starts. The kernel here reads K/V head
# $\lfloor h/G \rfloor$ in place, with a pointer offset: `K + b * stride_kb + j * stride_kh`.
# The checks watch the call and fail a solution that copies K or V into a bigger tensor.
#
# **Launch order.** Every query head of a group reads the *same* K/V head, tile by tile, in the same
# order. If those $G$ programs run at the same time, the first one to ask for a K/V tile brings it
# from HBM into the L2 cache and the other $G - 1$ find it there: K/V is read from memory about
# once per group instead of once per query head. A GPU hands out its programs roughly in order of
# their id as its SMs become free (the scheduling that tile-ordering tricks such as the "grouped
# ordering" of Triton's matmul tutorial rely on), so the order is ours to choose through how the
# program id is decoded. This kernel launches a one-dimensional grid of
# $B \cdot H_q \cdot \lceil L_q / \texttt{BLOCK\_M} \rceil$ programs and decodes each id as a
# mixed-radix number, from slowest to fastest digit:
#
# $$\text{pid} = \bigl((b \cdot H_{kv} + j) \cdot M + m\bigr) \cdot G + g, \qquad
# h = j \cdot G + g,$$
#
# with batch $b$, K/V head $j$, query block $m$ out of $M = \lceil L_q / \texttt{BLOCK\_M} \rceil$,
# and position $g$ in the group. Consecutive ids are the $G$ query heads of one group on the same
# query block: they start together and stream the same K/V tiles. In the plain order of problem 3
# (query block fastest, then head), the programs of one query head run first and the next head of
# the group reads the same K/V later, from HBM again once the sequence is long enough for the
# cache to have moved on.
#
# **How much does it buy?** Measured on an H100 (bf16, $D = 128$, $H_q = 32$, $H_{kv} = 8$), this
# prefill kernel runs at 480 to 500 TFLOPS in either order: the grouped order is within 3% of the
# plain one at $L$ from 4k to 32k, and 5% faster at $B = 2$, $H_q = 64$, $L = 16$k. The reason is
# arithmetic intensity: each K/V tile a program loads is used for `BLOCK_M` $= 128$ query rows, so
# prefill attention is limited by the tensor cores, not by memory, and the L2 cache (50 MB) already
# catches most of the re-reads. The order starts to matter where memory is the limit: short query
# blocks, as in decoding, where every query head re-reading the cache would cost $G$ times the
# bandwidth. It is the habit worth having, and it costs nothing.
#
# (The next step, used by FlashAttention-3 for decoding, is to pack the $G$ query heads into one
# program's block of rows, so that one program reads each K/V tile once for the whole group. It
# needs no new idea beyond this notebook's, only a different tile shape.)

# %% [markdown]
# ## 4. Your code
#
# The kernel below is problem 3's kernel with the online softmax already in place (you wrote it
# there); this exercise is about the heads. Write the two `@triton.jit` helpers in the next cell.
# They work on integer scalars (`//` and `%` are the integer quotient and remainder, as in Python):
#
# * `kv_head(off_hq, n_q_heads, n_kv_heads)`: the K/V head that query head `off_hq` reads.
# * `program_coordinates(pid, n_m_blocks, n_q_heads, n_kv_heads)`: the `(off_b, off_hq, start_m)`
#   (batch, query head, query block) that program `pid` computes, in the order of section 3:
#   batch slowest, then K/V head, then query block, then the query head within its group fastest.
#   Every `(batch, query head, query block)` must come from exactly one program id.
#
# The kernel calls `program_coordinates(tl.program_id(0), ...)`, then `kv_head` for the K/V pointers,
# and converts all three to int64 before any multiplication by a stride (a $B \cdot H \cdot L \cdot
# D$ offset can pass $2^{31}$). `launch_schedule` runs only your `program_coordinates` for every
# program id of a grid and returns the table, so you can print it and look:
# `launch_schedule(1, 4, 2, 3)` should start with query heads 0, 1 on block 0, then 0, 1 on block 1.
#
# Keep the cell to `@triton.jit` functions (and constants, if you want any): no imports, no other
# statements. When grading, the tests run in a fresh interpreter that holds only the course's cells and
# this one, not in this notebook: their verdicts are your points, and your feedback shows them under
# each test cell. On the CPU
# interpreter everything runs in float16, because bfloat16 `tl.dot` gives wrong results there (a
# known interpreter bug); on a GPU the checks use both.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math

import torch
import triton
import triton.language as tl

LN_2 = tl.constexpr(0.6931471805599453)  # log(2): converts base-2 logs back to natural
LOG2_E = 1.4426950408889634              # log2(e): turns exp(x) into exp2(x * LOG2_E)


# %% nbgrader={"grade": false, "grade_id": "gqa_mapping", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def kv_head(off_hq, n_q_heads, n_kv_heads):
    """The K/V head that query head `off_hq` reads.

    n_q_heads query heads share n_kv_heads K/V heads (n_q_heads is a multiple of n_kv_heads):
    each run of n_q_heads // n_kv_heads consecutive query heads reads one K/V head.
    """
    ### BEGIN SOLUTION
    group = n_q_heads // n_kv_heads  # query heads per K/V head
    off_hkv = off_hq // group
    ### END SOLUTION
    return off_hkv


@triton.jit
def program_coordinates(pid, n_m_blocks, n_q_heads, n_kv_heads):
    """Which (batch, query head, query block) the program with linear id `pid` computes.

    Launch order, slowest to fastest: batch, K/V head, query block, query head within its group.
    Consecutive programs are the query heads of one group working on the same query block,
    so they read the same K/V tiles at the same time.
    Returns (off_b, off_hq, start_m).
    """
    ### BEGIN SOLUTION
    group = n_q_heads // n_kv_heads
    g = pid % group              # fastest: the query heads that share a K/V head
    rest = pid // group
    start_m = rest % n_m_blocks  # then the query block
    rest = rest // n_m_blocks
    off_hkv = rest % n_kv_heads  # then the K/V head
    off_b = rest // n_kv_heads   # slowest: the batch
    off_hq = off_hkv * group + g
    ### END SOLUTION
    return off_b, off_hq, start_m


# %% nbgrader={"grade": false, "grade_id": "kernel", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.device import current as current_runtime
from autograder.validation import check_attention_inputs


@triton.jit
def _online_softmax_update(acc, l_i, m_i, s, v, key_idx, seq_len_k, MASK_KEYS: tl.constexpr):
    # Problem 3's update, unchanged: one block of keys folded into the running softmax.
    if MASK_KEYS:
        s = tl.where(key_idx[None, :] < seq_len_k, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return acc, l_i, m_new


@triton.jit
def _gqa_forward_kernel(
    Q, K, V, O, LSE,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    n_q_heads, n_kv_heads, seq_len_q, seq_len_k, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # A one-dimensional grid: your program_coordinates decides which program computes what.
    n_m_blocks = tl.cdiv(seq_len_q, BLOCK_M)
    off_b, off_hq, start_m = program_coordinates(tl.program_id(0), n_m_blocks, n_q_heads, n_kv_heads)
    off_hkv = kv_head(off_hq, n_q_heads, n_kv_heads)
    # int64 before any multiplication by a stride: B*H*L*D can pass 2**31.
    off_b = tl.cast(off_b, tl.int64)
    off_hq = tl.cast(off_hq, tl.int64)
    off_hkv = tl.cast(off_hkv, tl.int64)

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    # Q and O use the query head; K and V use the K/V head it maps to, read in place.
    q_ptrs = Q + off_b * stride_qb + off_hq * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    kt_ptrs = K + off_b * stride_kb + off_hkv * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    v_ptrs = V + off_b * stride_vb + off_hkv * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd

    q = tl.load(q_ptrs, mask=offs_m[:, None] < seq_len_q, other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    n_full = (seq_len_k // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        kt = tl.load(kt_ptrs + start_n * stride_kn)
        v = tl.load(v_ptrs + start_n * stride_vn)
        s = tl.dot(q, kt) * qk_scale
        acc, l_i, m_i = _online_softmax_update(acc, l_i, m_i, s, v, start_n + offs_n, seq_len_k, MASK_KEYS=False)
    if n_full < seq_len_k:
        key_idx = n_full + offs_n
        kt = tl.load(kt_ptrs + n_full * stride_kn, mask=key_idx[None, :] < seq_len_k, other=0.0)
        v = tl.load(v_ptrs + n_full * stride_vn, mask=key_idx[:, None] < seq_len_k, other=0.0)
        s = tl.dot(q, kt) * qk_scale
        acc, l_i, m_i = _online_softmax_update(acc, l_i, m_i, s, v, key_idx, seq_len_k, MASK_KEYS=True)

    o = acc / l_i[:, None]
    lse = (m_i + tl.math.log2(l_i)) * LN_2
    o_ptrs = O + off_b * stride_ob + off_hq * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, o.to(O.dtype.element_ty), mask=offs_m[:, None] < seq_len_q)
    lse_row = (off_b * n_q_heads + off_hq) * seq_len_q  # lse is a fresh contiguous (B, Hq, Lq) tensor
    tl.store(LSE + lse_row + offs_m, lse, mask=offs_m < seq_len_q)


def _launch_config(head_dim):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages): 128x64 tiles keep an H100's tensor cores busy."""
    if head_dim <= 64:
        return 128, 64, 4, 3
    return 128, 64, 8, 3


def flash_attention_gqa(q, k, v):
    """Grouped-query attention softmax(q k^T / sqrt(D)) v, non-causal.

    q is (B, Hq, Lq, D); k and v are (B, Hkv, Lk, D) with Hq a multiple of Hkv. Query head h
    reads K/V head h // (Hq // Hkv); K and V are read in place, never repeated.
    Returns (o, lse): o like q, lse float32 (B, Hq, Lq) in natural log.
    """
    check_attention_inputs(q, k, v, allow_gqa=True)
    batch, n_q_heads, seq_len_q, head_dim = q.shape
    n_kv_heads, seq_len_k = k.shape[1], k.shape[2]
    o = torch.empty_like(q)
    lse = torch.empty((batch, n_q_heads, seq_len_q), device=q.device, dtype=torch.float32)
    block_m, block_n, num_warps, num_stages = _launch_config(head_dim)
    n_programs = triton.cdiv(seq_len_q, block_m) * batch * n_q_heads
    qk_scale = LOG2_E / math.sqrt(head_dim)  # fold the softmax scale into exp2
    _gqa_forward_kernel[(n_programs,)](
        q, k, v, o, lse,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        n_q_heads, n_kv_heads, seq_len_q, seq_len_k, qk_scale,
        HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
        num_warps=num_warps, num_stages=num_stages,
    )
    return o, lse


@triton.jit
def _schedule_probe_kernel(OUT, n_m_blocks, n_q_heads, n_kv_heads):
    # Runs only your program_coordinates and writes down its answer for every program id.
    pid = tl.program_id(0)
    off_b, off_hq, start_m = program_coordinates(pid, n_m_blocks, n_q_heads, n_kv_heads)
    tl.store(OUT + pid * 3 + 0, off_b)
    tl.store(OUT + pid * 3 + 1, off_hq)
    tl.store(OUT + pid * 3 + 2, start_m)


def launch_schedule(batch, n_q_heads, n_kv_heads, n_m_blocks):
    """(n_programs, 3) int tensor: the (batch, query head, query block) of each program id, in
    launch order, as the attention kernel's grid would run them."""
    n_programs = batch * n_q_heads * n_m_blocks
    out = torch.full((n_programs, 3), -1, dtype=torch.int32, device=current_runtime().device)
    _schedule_probe_kernel[(n_programs,)](out, n_m_blocks, n_q_heads, n_kv_heads)
    return out.cpu()


# %% [markdown] nbgrader={"grade": false, "grade_id": "self_check_intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### Check as you go
#
# Run the next cell after every change to your cell (run your cell and the cells after it again first). It runs the visible shapes of section 5 and gives the same diagnosis the grader gives: for a wrong case, where it goes wrong and the likely cause.

# %% nbgrader={"grade": false, "grade_id": "self_check", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem5 import check

check(flash_attention_gqa, launch_schedule=launch_schedule)  # the visible shapes, with the grader's diagnosis

# %% nbgrader={"grade": false, "grade_id": "hint", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.hints import hint

hint("problem5")  # run again for the next step

# %% [markdown]
# ## 5. Check your work
#
# Each check prints one line per test input: `PASS` or `FAIL`, the largest error against a float64
# reference, and for a failure *where* it goes wrong and the most likely cause. When the output is
# attention with the wrong K/V heads, the check says which K/V head each query head actually read.
# Every check also fails a call that copied K or V into a bigger tensor, even when the numbers are
# right. The schedule check compares the table of `launch_schedule` with the order of section 3.

# %% nbgrader={"grade": true, "grade_id": "test_gqa_heads", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem5 import assert_gqa_cases

# Two query heads per K/V head, and all query heads on one K/V head; output and log-sum-exp.
assert_gqa_cases(flash_attention_gqa, [Case(1, 4, 128, 64, H_kv=2), Case(1, 4, 128, 32, H_kv=1, seed=1)])

# %% nbgrader={"grade": true, "grade_id": "test_schedule", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem5 import assert_schedule

# The launch order: (batch, K/V head, query block, query head in its group), slowest to fastest.
assert_schedule(launch_schedule, [(2, 4, 2, 3)])

# %% [markdown]
# ### What the grader also checks
#
# The cells below hold tests you cannot see. They check, in this order: every group size
# $H_q / H_{kv} \in \{1, 2, 4, 8\}$ with sequence lengths that are not multiples of the block
# sizes (including a single token, and different query and key lengths); head counts that are not
# powers of two and every head dimension from 16 to 128; bfloat16 as well as float16 and inputs
# that are not contiguous in memory; the launch order for other grids (one K/V head, as many K/V
# heads as query heads, several batches); and the log-sum-exp on its own. If the visible checks pass
# and your functions use only the arguments they are given, these will too.

# %% nbgrader={"grade": true, "grade_id": "test_hidden_group_sizes", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem5 import assert_gqa_cases

# Hidden: Every group size Hq/Hkv in {1, 2, 4, 8}, with awkward sequence lengths.
### BEGIN HIDDEN TESTS
assert_gqa_cases(flash_attention_gqa, [
    Case(1, 8, 1, 64, H_kv=2, seed=50),
    Case(2, 4, 17, 32, H_kv=4, seed=51),
    Case(2, 8, 100, 32, H_kv=4, seed=52),
    Case(1, 8, 65, 64, H_kv=2, seed=53),
    Case(1, 8, 130, 16, H_kv=1, L_k=70, seed=54),
    Case(1, 4, 200, 64, H_kv=2, L_k=333, seed=55),
], check_lse=False)
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_shapes", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem5 import assert_gqa_cases

# Hidden: Head counts that are not powers of two, several batches, every head dimension.
### BEGIN HIDDEN TESTS
assert_gqa_cases(flash_attention_gqa, [
    Case(2, 6, 128, 16, H_kv=3, seed=60),
    Case(1, 6, 96, 32, H_kv=2, seed=61),
    Case(3, 4, 64, 64, H_kv=2, seed=62),
    Case(1, 3, 64, 128, H_kv=1, seed=63),
    Case(1, 4, 128, 128, H_kv=2, seed=64),
], check_lse=False)
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_dtypes_layouts", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem5 import assert_gqa_cases

# Hidden: bfloat16 and float16, contiguous or not.
### BEGIN HIDDEN TESTS
assert_gqa_cases(flash_attention_gqa, [
    Case(1, 8, 256, 64, "bfloat16", H_kv=2, seed=70),
    Case(1, 4, 192, 128, "bfloat16", "bshd", H_kv=2, seed=71),
    Case(2, 8, 128, 64, "float16", "bshd", H_kv=1, seed=72),
    Case(1, 4, 160, 32, "float16", "strided_d", H_kv=2, seed=73),
    Case(1, 8, 128, 64, "bfloat16", "strided_d", H_kv=4, seed=74),
], check_lse=False)
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_schedule", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem5 import assert_schedule

# Hidden: The launch order for other grids.
### BEGIN HIDDEN TESTS
assert_schedule(launch_schedule, [(1, 4, 4, 2), (1, 8, 1, 2), (3, 6, 2, 5), (2, 8, 2, 1), (1, 1, 1, 3)])
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_lse", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem5 import assert_gqa_cases

# Hidden: The log-sum-exp of every query head, in natural log.
### BEGIN HIDDEN TESTS
assert_gqa_cases(flash_attention_gqa, [
    Case(1, 4, 1, 16, H_kv=2, seed=80),
    Case(1, 8, 128, 64, H_kv=2, seed=81),
    Case(2, 4, 333, 32, H_kv=1, seed=82),
], check_output=False)
### END HIDDEN TESTS

# %% [markdown]
# ## 6. How fast is it?
#
# On a GPU the next cell times your kernel with $H_q = 32$ query heads on $H_{kv} = 8$ K/V heads
# against PyTorch's `scaled_dot_product_attention(..., enable_gqa=True)` with two backends pinned
# (FlashAttention-2 and cuDNN; a backend that refuses GQA on this GPU or this PyTorch is listed with
# its reason), and against `repeat_interleave` followed by your kernel: look at its peak-memory
# column. Then it times your kernel at $H_q = 32, H_{kv} = 8$ against $H_q = H_{kv} = 32$, the same
# query work: a ratio near 1 means sharing K/V heads costs nothing. (For scale, on an H100 with
# $B = 4$, $L = 4096$, $D = 128$ in bf16, the course's reference kernel runs at about 460 TFLOPS,
# 1.4x the FlashAttention-2 backend and 0.76x cuDNN, with both backends accepting `enable_gqa` on
# PyTorch 2.11.) On the CPU interpreter there is nothing meaningful to time, and the cell says so.

# %% nbgrader={"grade": false, "grade_id": "benchmark", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem5 import benchmark

benchmark(flash_attention_gqa)

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
from autograder.problems.problem5 import performance_points

# Performance: your kernel's time over the reference kernel's, on the same GPU in the same run.
# Ratio <= 1.3 earns both points, <= 1.6 one; a kernel that fails the self-check earns none.
# Under the CPU interpreter the ratio measures how much work the kernel does, not GPU speed.
performance_points(flash_attention_gqa)

# %% [markdown] nbgrader={"grade": false, "grade_id": "outro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 7. What you built
#
# A GQA forward kernel that reads each K/V head in place and launches the query heads of a group
# next to each other, so that a K/V tile fetched for one of them can serve the rest from L2. Its
# time is that of multi-head attention with $H_q$ heads (on an H100, $H_q = 32, H_{kv} = 8$ and
# $H_q = H_{kv} = 32$ take the same time to within 2%), and its memory is that of the $H_{kv}$
# heads actually stored: repeating K/V first would have allocated 4 times the K/V memory and taken 4 to 46%
# more time in the same measurement, more the shorter the sequence.
# The next problem keeps this mapping and adds causal sliding windows and attention sinks, where
# the kernel also decides which K/V blocks a program visits at all.
