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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/flash-attention-course/flash-attention-course/blob/main/notebooks/problem3/problem3.ipynb)
#
# Runs in Colab (GPU or CPU), on a laptop without a GPU, or on a GPU machine: [how to start, and what each can do](https://github.com/flash-attention-course/flash-attention-course/blob/main/README.md#start).

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Problem 3 · FlashAttention-2 forward in Triton (non-causal)
#
# In this chapter you write the heart of a real FlashAttention-2 kernel: the **online softmax**
# that lets attention run over a sequence of any length without ever storing the $L \times L$
# score matrix. Everything around it (pointer arithmetic, loads, the launch) is given, so that
# the part you write is the part that matters.
#
# **You will learn** why naive attention runs out of memory, how a softmax can be computed in
# one pass over blocks of keys, and how that turns into a Triton kernel that runs as fast as
# PyTorch's own.
#
# **How this notebook works.** Run the cells from the top. The first code cell installs the
# course when it is missing (in Colab) and picks the GPU, or Triton's CPU interpreter when there
# is no GPU that Triton supports (everything here works on a laptop, only slower). You edit one
# cell, marked *Your code*. The self-check right after it tells you what is wrong and why, a hint
# cell reveals one step at a time when you are stuck, and the check cells of section 5 are the
# ones that earn points; the grader runs more checks of the same kind on shapes you do not see.

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
# ## 1. Why attention needs a new algorithm
#
# Attention for one head is
#
# $$O = \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{D}}\right) V, \qquad Q, K, V \in \mathbb{R}^{L \times D}.$$
#
# Written out the obvious way, it builds the score matrix $S = QK^\top/\sqrt{D}$ and the
# probabilities $P = \operatorname{softmax}(S)$, both $L \times L$, in GPU memory (HBM). For
# $B=4$ sequences, $H=16$ heads and $L=16\,384$ tokens that is $4 \cdot 16 \cdot 16384^2 \approx
# 1.7\cdot 10^{10}$ scores: **34 GB in bf16 for $S$ alone**, written once and read back at
# least twice. The arithmetic ($4BHL^2D$ flops) is not the problem; the memory traffic and the
# memory size are.
#
# FlashAttention never writes $S$ or $P$. Each program loads a block of queries into fast
# on-chip memory (SRAM / registers), streams the keys and values past it block by block, and
# keeps only a small running state per query row. The catch is the softmax: its denominator
# needs the whole row. The online softmax removes that catch.

# %% [markdown]
# ## 2. The online softmax
#
# For one query row with scores $s_1, \dots, s_L$ the softmax is
# $p_j = e^{s_j - m} / \ell$ with $m = \max_j s_j$ (subtracted so that no $e^{x}$ overflows)
# and $\ell = \sum_j e^{s_j - m}$. Split the keys into blocks $B_1, B_2, \dots$ and keep, after
# block $t$, a running max, a running sum and an un-normalised output:
#
# $$
# m_t = \max\bigl(m_{t-1}, \max_{j \in B_t} s_j\bigr), \qquad
# \alpha_t = e^{m_{t-1} - m_t},
# $$
# $$
# \ell_t = \alpha_t\,\ell_{t-1} + \sum_{j \in B_t} e^{s_j - m_t}, \qquad
# \mathrm{acc}_t = \alpha_t\,\mathrm{acc}_{t-1} + \sum_{j \in B_t} e^{s_j - m_t}\, v_j ,
# $$
#
# starting from $m_0 = -\infty$, $\ell_0 = 0$, $\mathrm{acc}_0 = 0$.
#
# **Why it is exact.** By induction, $\ell_t = \sum_{j \le t} e^{s_j - m_t}$: if it holds for
# $t-1$, then $\alpha_t \ell_{t-1} = \sum_{j \in \text{earlier}} e^{s_j - m_{t-1}} e^{m_{t-1} - m_t}$,
# which re-bases every old term onto the new max, and the new block adds its own terms. The same
# argument holds for $\mathrm{acc}_t$. After the last block, $O = \mathrm{acc}/\ell$ is exactly the
# softmax-weighted sum, and the **log-sum-exp** $\mathrm{LSE} = m + \log \ell$ (natural log) is the
# one number per row that a backward pass needs to rebuild $P$ later.
#
# $\alpha_t$ is the whole trick: whenever a later block raises the max, everything accumulated so
# far was measured against a max that was too small, and is scaled down by $\alpha_t \le 1$.
#
# **exp2 with the scale folded in.** GPUs compute $2^x$ natively; $e^x = 2^{x \log_2 e}$. The kernel
# therefore multiplies the raw dot products once by `qk_scale` $= \log_2 e / \sqrt{D}$ and works
# with $s'_j = s_j \log_2 e$ throughout: `exp2(s' - m')` $= e^{s - m}$. The running max is then in
# base-2 units too, so the natural-log LSE is $\ln 2 \cdot (m' + \log_2 \ell)$.
#
# The picture below runs the recurrence on one row of 256 random scores in blocks of 64. The
# running sum drops when a block brings a larger max: that is $\alpha$ at work.

# %% nbgrader={"grade": false, "grade_id": "plot_online_softmax", "locked": true, "schema_version": 3, "solution": false, "task": false}
import matplotlib.pyplot as plt

from autograder.plots import plot_online_softmax

plot_online_softmax(seq_len=256, block_n=64)
plt.show()

# %% [markdown]
# ## 3. From recurrence to kernel
#
# The kernel launches one program per (block of `BLOCK_M` queries, batch × head). Each program:
#
# 1. loads its query block `q` (`BLOCK_M × D`, 16-bit) once;
# 2. walks over the keys in blocks of `BLOCK_N`: loads $K_j^\top$ and $V_j$, computes the scores
#    `qk = tl.dot(q, kt)` (16-bit operands on the tensor cores, float32 result), and
#    folds them into `(acc, l_i, m_i)` with **your** `online_softmax_update`, which applies the
#    scale `qk_scale` itself (one fused multiply-add per score: `qk * qk_scale - m`);
# 3. turns the state into the output block and its log-sum-exp with **your** `finalize`, and stores both.
#
# **The tail block.** When $L$ is not a multiple of `BLOCK_N`, the last block of keys runs past the
# end of the sequence. The masked load fills those keys with zeros, and a zero key scores
# $q \cdot 0 = 0$, not $-\infty$: unless the scores of those keys are set to $-\infty$, they take
# part in the softmax. (A widely copied version of this kernel has exactly this bug: at $L = 200$
# its output is off by 0.066 on an H100.) The kernel calls your update with `MASK_KEYS=True` only for that
# last block, so the full blocks pay nothing for the check.
#
# The hatched region below is what does not exist: keys past $L$ (must be masked) and queries
# past $L$ (computed on zero padding, never stored).

# %% nbgrader={"grade": false, "grade_id": "plot_tiling", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.plots import plot_tiling

plot_tiling(seq_len=200, block_m=64, block_n=64, query_block=1)
plt.show()

# %% [markdown]
# ## 4. Your code
#
# Write the two `@triton.jit` helpers in the next cell. Both work on whole blocks: `tl.max(x, axis=1)`
# and `tl.sum(x, axis=1)` reduce a row, `x[:, None]` broadcasts a per-row value across columns,
# `tl.where(cond, a, b)` selects, `tl.math.exp2` and `tl.math.log2` are the fast base-2 functions,
# and `tl.dot(a, b, acc)` returns `acc + a @ b` with float32 accumulation.
#
# * `online_softmax_update(acc, l_i, m_i, qk, v, key_idx, seq_len_k, qk_scale, MASK_KEYS)`: mask the keys
#   past the end when `MASK_KEYS` is true, then apply one step of the recurrence to the scores
#   `qk * qk_scale` (base-2 units) and return the new `(acc, l_i, m_i)`. Because `qk_scale > 0`, the
#   row max of the scaled scores is the scaled row max: scale once per row, then `qk * qk_scale - m`
#   is a single fused multiply-add per score. Cast `p` to `v.dtype` before `tl.dot`: a 16-bit dot runs on the tensor cores,
#   a float32 one is several times slower.
# * `finalize(acc, l_i, m_i)`: return `(o, lse)`: the normalised output and the natural-log
#   log-sum-exp of each row.
#
# Keep the cell to `@triton.jit` functions (and constants, if you want any): no imports, no other
# statements. When grading, the tests run in a fresh interpreter that holds only the course's cells and
# this one, not in this notebook: their verdicts are your points, and your feedback shows them under
# each test cell. Do not call
# PyTorch's attention, softmax or matmul anywhere: the checks look for that and give no points for it. On the CPU interpreter everything runs in float16, because bfloat16 `tl.dot` gives
# wrong results there (a known interpreter bug); on a GPU the checks use both.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math

import torch
import triton
import triton.language as tl

LN_2 = tl.constexpr(0.6931471805599453)  # log(2): converts base-2 logs back to natural
LOG2_E = 1.4426950408889634              # log2(e): turns exp(x) into exp2(x * LOG2_E)


# %% nbgrader={"grade": false, "grade_id": "online_softmax", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def online_softmax_update(acc, l_i, m_i, qk, v, key_idx, seq_len_k, qk_scale, MASK_KEYS: tl.constexpr):
    """Fold one block of keys into the running softmax of a block of queries.

    acc      (BLOCK_M, HEAD_DIM) float32  un-normalised sum of p @ V so far
    l_i      (BLOCK_M,)          float32  running sum of exp2(qk * qk_scale - m_i)
    m_i      (BLOCK_M,)          float32  running row maximum of qk * qk_scale (base-2 units)
    qk       (BLOCK_M, BLOCK_N)  float32  raw scores q . k of this block (not yet scaled)
    v        (BLOCK_N, HEAD_DIM) 16-bit   values of this block
    key_idx  (BLOCK_N,)          int32    position of each key in the sequence
    qk_scale                     float32  softmax_scale * log2(e) = log2(e) / sqrt(D), always > 0
    MASK_KEYS: True only for the last block, where key_idx can run past seq_len_k

    Returns the updated (acc, l_i, m_i).
    """
    ### BEGIN SOLUTION
    if MASK_KEYS:
        # Padded keys were loaded as zeros, which would score 0, not -inf.
        qk = tl.where(key_idx[None, :] < seq_len_k, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, axis=1) * qk_scale)  # scale after the max: qk_scale > 0
    alpha = tl.math.exp2(m_i - m_new)          # how much the old max overestimated
    p = tl.math.exp2(qk * qk_scale - m_new[:, None])  # one fused multiply-add per score
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
    natural log, i.e. log(sum_j exp(q . k_j * softmax_scale)).
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
def _flash_attention_forward_kernel(
    Q, K, V, O, LSE,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    n_heads, seq_len_q, seq_len_k, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # One program computes BLOCK_M query rows of one (batch, head).
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = (off_bh // n_heads).to(tl.int64)  # int64: B*H*L*D can pass 2**31
    off_h = (off_bh % n_heads).to(tl.int64)

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    # K is read transposed, (HEAD_DIM, BLOCK_N), so that q @ k is a plain tl.dot.
    kt_ptrs = K + off_b * stride_kb + off_h * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    v_ptrs = V + off_b * stride_vb + off_h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd

    q = tl.load(q_ptrs, mask=offs_m[:, None] < seq_len_q, other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # Full blocks of keys need no bounds checks; only the last, partial block does.
    n_full = (seq_len_k // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        kt = tl.load(kt_ptrs + start_n * stride_kn)
        v = tl.load(v_ptrs + start_n * stride_vn)
        acc, l_i, m_i = online_softmax_update(acc, l_i, m_i, tl.dot(q, kt), v, start_n + offs_n, seq_len_k,
                                              qk_scale, MASK_KEYS=False)
    if n_full < seq_len_k:
        key_idx = n_full + offs_n
        kt = tl.load(kt_ptrs + n_full * stride_kn, mask=key_idx[None, :] < seq_len_k, other=0.0)
        v = tl.load(v_ptrs + n_full * stride_vn, mask=key_idx[:, None] < seq_len_k, other=0.0)
        acc, l_i, m_i = online_softmax_update(acc, l_i, m_i, tl.dot(q, kt), v, key_idx, seq_len_k,
                                              qk_scale, MASK_KEYS=True)

    o, lse = finalize(acc, l_i, m_i)
    o_ptrs = O + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, o.to(O.dtype.element_ty), mask=offs_m[:, None] < seq_len_q)
    tl.store(LSE + off_bh.to(tl.int64) * seq_len_q + offs_m, lse, mask=offs_m < seq_len_q)


@triton.jit
def _flash_attention_forward_kernel_tma(
    desc_q, desc_k, desc_v, desc_o, LSE, n_heads, seq_len_q, seq_len_k, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, OUT_DTYPE: tl.constexpr,
):
    # The same program as above, with the tiles fetched by the GPU's tensor memory accelerator
    # (Hopper and newer): a descriptor knows the tensor's shape and strides, so a tile load is one
    # instruction, bounds included (rows past the end arrive as zeros, stores past it are dropped).
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = off_bh // n_heads
    off_h = off_bh % n_heads
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)

    q = desc_q.load([off_b, off_h, start_m * BLOCK_M, 0]).reshape(BLOCK_M, HEAD_DIM)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    n_full = (seq_len_k // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        k = desc_k.load([off_b, off_h, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        v = desc_v.load([off_b, off_h, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        acc, l_i, m_i = online_softmax_update(acc, l_i, m_i, tl.dot(q, k.T), v, start_n + offs_n, seq_len_k,
                                              qk_scale, MASK_KEYS=False)
    if n_full < seq_len_k:
        k = desc_k.load([off_b, off_h, n_full, 0]).reshape(BLOCK_N, HEAD_DIM)
        v = desc_v.load([off_b, off_h, n_full, 0]).reshape(BLOCK_N, HEAD_DIM)
        acc, l_i, m_i = online_softmax_update(acc, l_i, m_i, tl.dot(q, k.T), v, n_full + offs_n, seq_len_k,
                                              qk_scale, MASK_KEYS=True)

    o, lse = finalize(acc, l_i, m_i)
    desc_o.store([off_b, off_h, start_m * BLOCK_M, 0], o.to(OUT_DTYPE).reshape(1, 1, BLOCK_M, HEAD_DIM))
    tl.store(LSE + off_bh.to(tl.int64) * seq_len_q + offs_m, lse, mask=offs_m < seq_len_q)


# (BLOCK_M, BLOCK_N, num_warps, num_stages) per head dim. Hopper: the fastest of a sweep on an
# H100 (scripts/tune_kernels.py --problem problem3, docs/gpu-results.md). Elsewhere: tiles that
# fit the shared memory of Ampere and Ada GPUs (100-164 KB) and under the interpreter.
_HOPPER_CONFIGS = {16: (64, 128, 4, 3), 32: (128, 128, 4, 3), 64: (128, 128, 4, 3), 128: (128, 128, 8, 3)}
_DEFAULT_CONFIGS = {16: (64, 64, 4, 3), 32: (128, 64, 4, 3), 64: (128, 64, 4, 3), 128: (128, 64, 8, 2)}


def _launch_config(q):
    return (_HOPPER_CONFIGS if is_hopper_or_newer(q) else _DEFAULT_CONFIGS)[q.shape[-1]]


def flash_attention_forward(q, k, v, *, config=None, tma=True):
    """Non-causal attention softmax(q k^T / sqrt(D)) v for (B, H, L, D) tensors.

    Returns (o, lse): o like q, lse float32 (B, H, L) in natural log.
    For sweeps (scripts/tune_kernels.py): `config` = (BLOCK_M, BLOCK_N, num_warps, num_stages)
    replaces _launch_config(q), and `tma=False` takes the pointer kernel on a Hopper GPU too.
    """
    check_attention_inputs(q, k, v)
    batch, n_heads, seq_len_q, head_dim = q.shape
    seq_len_k = k.shape[2]
    o = torch.empty_like(q)
    lse = torch.empty((batch, n_heads, seq_len_q), device=q.device, dtype=torch.float32)
    block_m, block_n, num_warps, num_stages = config or _launch_config(q)
    grid = (triton.cdiv(seq_len_q, block_m), batch * n_heads)
    qk_scale = LOG2_E / math.sqrt(head_dim)  # fold the softmax scale into exp2
    if tma and tma_ready(q, k, v, o):  # Hopper and newer: tiles through tensor descriptors
        _flash_attention_forward_kernel_tma[grid](
            tile_descriptor(q, block_m), tile_descriptor(k, block_n), tile_descriptor(v, block_n),
            tile_descriptor(o, block_m), lse,
            n_heads, seq_len_q, seq_len_k, qk_scale,
            HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
            OUT_DTYPE=tl.bfloat16 if q.dtype == torch.bfloat16 else tl.float16,
            num_warps=num_warps, num_stages=num_stages,
        )
        return o, lse
    _flash_attention_forward_kernel[grid](
        q, k, v, o, lse,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        n_heads, seq_len_q, seq_len_k, qk_scale,
        HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
        num_warps=num_warps, num_stages=num_stages,
    )
    return o, lse


# %% [markdown]
# ### Check as you go, and a hint when you are stuck
#
# Run the next cell after every change to your cell (run the *Your code* cell and the kernel cell
# again first, so that the kernel picks up your edit). It runs the visible shapes of section 5
# (whole blocks, then a tail block), output and log-sum-exp, and gives the same diagnosis the
# grader gives: for a wrong case, the first bad (batch, head, row) and the likely cause.
#
# If you are stuck, the cell after it is a hint ladder: each run reveals one more step, two
# nudges first and then the idea of the solution in words (never the code).
# `hint("problem3", 1)` shows a step again.

# %% nbgrader={"grade": false, "grade_id": "self_check", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem3 import check

check(flash_attention_forward)  # the visible shapes, with the grader's diagnosis when one is wrong

# %% nbgrader={"grade": false, "grade_id": "hints", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.hints import hint

hint("problem3");  # each run reveals the next step

# %% [markdown]
# ## 5. Check your work
#
# Each check prints one line per test input: `PASS` or `FAIL`, the largest error against a float64
# reference, and for a failure *where* it goes wrong and the most likely cause. The tolerance is a
# few units in the last place of the dtype (about $2\cdot10^{-3}$ for float16, $1.6\cdot10^{-2}$ for
# bfloat16): a correct kernel is well inside it, and the typical mistakes are far outside.

# %% nbgrader={"grade": true, "grade_id": "test_full_blocks", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem3 import assert_forward_cases

# Sequence lengths that are whole numbers of blocks; output and log-sum-exp.
assert_forward_cases(flash_attention_forward, [Case(1, 2, 128, 64), Case(2, 2, 256, 32, seed=1)])

# %% nbgrader={"grade": true, "grade_id": "test_tail_block", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem3 import assert_forward_cases

# L = 200 is not a multiple of the key block: the last block must be masked.
assert_forward_cases(flash_attention_forward, [Case(1, 2, 200, 64, seed=2)])

# %% [markdown]
# ### What the grader also checks
#
# The cells below hold tests you cannot see. They check, in this order: sequence lengths that are
# not multiples of the block sizes (including a single token, and different query and key lengths);
# several batches and heads with every head dimension from 16 to 128; bfloat16 as well as float16
# and inputs that are not contiguous in memory (as a model's `(B, L, H, D)` projections are);
# and the log-sum-exp on its own. If the visible checks pass and you handled the tail block,
# these will too.

# %% nbgrader={"grade": true, "grade_id": "test_hidden_lengths", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem3 import assert_forward_cases

# Hidden: Sequence lengths that are not multiples of the block sizes.
### BEGIN HIDDEN TESTS
assert_forward_cases(flash_attention_forward, [
    Case(1, 1, 1, 64, seed=10),
    Case(2, 2, 17, 32, seed=11),
    Case(2, 1, 65, 16, seed=12),
    Case(1, 3, 200, 128, seed=13),
    Case(1, 1, 1000, 64, seed=14),
    Case(1, 2, 130, 64, L_k=70, seed=15),
], check_lse=False)
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_shapes", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem3 import assert_forward_cases

# Hidden: Several batches and heads, every supported head dimension (whole 128-key blocks).
### BEGIN HIDDEN TESTS
assert_forward_cases(flash_attention_forward, [
    Case(2, 3, 128, 16, seed=20),
    Case(3, 2, 256, 32, seed=21),
    Case(2, 4, 256, 64, seed=22),
    Case(2, 2, 128, 128, seed=23),
], check_lse=False)
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_dtypes_layouts", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem3 import assert_forward_cases

# Hidden: bfloat16 and float16, contiguous or not (whole 128-key blocks).
### BEGIN HIDDEN TESTS
assert_forward_cases(flash_attention_forward, [
    Case(2, 2, 256, 64, "bfloat16", seed=30),
    Case(1, 2, 256, 128, "bfloat16", "bshd", seed=31),
    Case(2, 2, 128, 64, "float16", "bshd", seed=32),
    Case(1, 2, 256, 32, "float16", "strided_d", seed=33),
    Case(1, 2, 256, 64, "bfloat16", "strided_d", seed=34),
], check_lse=False)
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_lse", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem3 import assert_forward_cases

# Hidden: The log-sum-exp, in natural log.
### BEGIN HIDDEN TESTS
assert_forward_cases(flash_attention_forward, [
    Case(1, 1, 1, 16, seed=40),
    Case(1, 2, 128, 64, seed=41),
    Case(2, 2, 333, 32, seed=42),
], check_output=False)
### END HIDDEN TESTS

# %% [markdown]
# ## 6. How fast is it?
#
# On a GPU the next cell times your kernel against the naive PyTorch attention and against PyTorch's
# `scaled_dot_product_attention` with two of its backends pinned (FlashAttention-2 and cuDNN), all
# in the same run, with `triton.testing.do_bench` medians. It reports TFLOPS ($4BHL^2D$ / time) and
# the peak extra memory of one call: the naive version's memory grows with $L^2$, yours with $L$.
# On the CPU interpreter there is nothing meaningful to time, and the cell says so.

# %% nbgrader={"grade": false, "grade_id": "benchmark", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem3 import benchmark

benchmark(flash_attention_forward)

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
from autograder.problems.problem3 import performance_points

# Performance: your kernel's time over the reference kernel's, on the same GPU in the same run.
# Ratio <= 1.3 earns both points, <= 1.6 one; a kernel that fails the self-check earns none.
# Under the CPU interpreter the ratio measures how much work the kernel does, not GPU speed.
performance_points(flash_attention_forward)

# %% [markdown] nbgrader={"grade": false, "grade_id": "outro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 7. What you built, and what comes next
#
# Your kernel reads Q, K and V once each and writes O and the LSE once: $O(L)$ memory instead of
# $O(L^2)$. The speed comes from three things you can now see in the code: 16-bit `tl.dot` on the
# tensor cores with float32 accumulation, `exp2` with the softmax scale folded into one multiply,
# and normalisation deferred to a single division at the end. The next problems add a causal mask
# (and skip the blocks it hides), grouped-query attention, and sliding windows with attention sinks,
# all on top of the same `online_softmax_update`.
