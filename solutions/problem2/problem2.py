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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/flash-attention-course/flash-attention-course/blob/main/notebooks/problem2/problem2.ipynb)
#
# Runs in Colab (GPU or CPU), on a laptop without a GPU, or on a GPU machine: [how to start, and what each can do](https://github.com/flash-attention-course/flash-attention-course/blob/main/README.md#start).

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Problem 2 · The online softmax, and attention one block at a time
#
# Attention needs a softmax over every row of an $L \times L$ score matrix, and a softmax seems
# to need the whole row before it can produce anything: its maximum, then its sum, then the
# probabilities. This chapter shows that it does not. A softmax can be computed in **one pass**
# over a row read in blocks, keeping only two numbers per row, and the same idea turns attention
# into a loop over blocks of keys that never holds the score matrix. That loop is the algorithm
# inside FlashAttention; in problem 3 you move it into a Triton kernel.
#
# **You will learn** why a softmax must subtract the maximum, how a running maximum and a running
# sum are corrected when a later block brings a larger value, why that is exact (a short proof),
# and how to write attention in PyTorch whose memory grows with $L$ instead of $L^2$.
#
# **How this notebook works.** Run the cells from the top. You edit one cell, marked *Your code*:
# two plain PyTorch functions. The check cells below it say what is wrong and why; the grader runs
# more checks of the same kind on inputs you do not see. Everything here runs on a CPU in seconds.

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
# ## 1. What a softmax needs
#
# For a row of logits $x_1, \dots, x_N$ the softmax is
#
# $$p_j = \frac{e^{x_j}}{\sum_{i=1}^{N} e^{x_i}} = \frac{e^{x_j - m}}{\sum_{i} e^{x_i - m}} \quad \text{for any constant } m .$$
#
# The two forms are equal (multiply top and bottom by $e^{-m}$), but only the second survives a
# computer. In float32 the largest number is about $3.4 \cdot 10^{38} = e^{88.7}$: a logit of 89
# already makes $e^{x}$ infinite, and $\infty / \infty$ is NaN. Attention logits grow that large
# in real models (long contexts, large activations, low-temperature heads). With
# $m = \max_i x_i$ every exponent is $\le 0$, every term lies in $(0, 1]$, and the largest term is
# exactly $1$, so the sum is at least 1 and never overflows either.
#
# The textbook softmax therefore reads the row **three times**: once for $m$, once for
# $\ell = \sum_i e^{x_i - m}$, once to write $p_j = e^{x_j - m}/\ell$. For attention the row is
# $L$ scores that do not exist yet: they are computed from $Q$ and $K$, and storing all of them
# is what costs $O(L^2)$ memory (left: the overflow; right: what storing the scores costs).

# %% nbgrader={"grade": false, "grade_id": "plot_overflow_and_memory", "locked": true, "schema_version": 3, "solution": false, "task": false}
import matplotlib.pyplot as plt

from autograder.problems.problem2 import plot_overflow_and_memory

plot_overflow_and_memory()
plt.show()

# %% [markdown]
# ## 2. The online softmax: one pass for the maximum and the sum
#
# Split the row into blocks $B_1, B_2, \dots, B_T$ of `block_size` columns (the last one may be
# shorter). Keep, after block $t$, a running maximum and a running sum:
#
# $$
# m_0 = -\infty, \quad \ell_0 = 0, \qquad
# m_t = \max\!\Bigl(m_{t-1},\ \max_{j \in B_t} x_j\Bigr), \qquad
# \alpha_t = e^{\,m_{t-1} - m_t} \le 1,
# $$
# $$
# \ell_t = \alpha_t\, \ell_{t-1} + \sum_{j \in B_t} e^{\,x_j - m_t}.
# $$
#
# **Claim.** After every block, $m_t = \max_{j \in B_1 \cup \dots \cup B_t} x_j$ and
# $\ell_t = \sum_{j \in B_1 \cup \dots \cup B_t} e^{\,x_j - m_t}$. In particular
# $m_T = m$, $\ell_T = \ell$, and $p_j = e^{x_j - m_T} / \ell_T$ is the softmax.
#
# **Proof (induction on $t$).** For $t = 1$: $\alpha_1 = e^{-\infty} = 0$ and the statement is the
# definition. Suppose it holds for $t-1$. The claim about $m_t$ is immediate, since the max of a
# union is the max of the maxima. For the sum,
#
# $$
# \alpha_t\, \ell_{t-1} = e^{\,m_{t-1} - m_t} \sum_{j \in B_{<t}} e^{\,x_j - m_{t-1}}
# = \sum_{j \in B_{<t}} e^{\,x_j - m_t},
# $$
#
# so multiplying by $\alpha_t$ **re-bases** every earlier term from the old maximum onto the new
# one, and the block's own terms, already measured against $m_t$, complete the sum. $\square$
#
# Every exponent stays $\le 0$ throughout, so nothing overflows at any step. When a block does
# not raise the maximum, $\alpha_t = 1$ and the update is a plain sum; when it does, everything
# summed so far shrinks by $\alpha_t$. Forgetting that factor is the classic mistake: the old
# terms then stay measured against a maximum that is too small, and the sum comes out too large.
#
# The picture runs the recurrence on one row of 256 scores in blocks of 64. The running sum drops
# when a block brings a larger maximum: that is $\alpha$ at work.
#
# **Masked entries.** Attention masks set some logits to $-\infty$ (their probability is 0).
# A block that is entirely $-\infty$ in the middle of a row is harmless ($\alpha = 1$, it adds
# $e^{-\infty} = 0$). A row whose *first* block is entirely $-\infty$ is not: its running max is
# still $-\infty$ and $e^{m_{t-1} - m_t} = e^{-\infty - (-\infty)}$ is NaN. The fix is to subtract
# $0$ instead of the maximum while the maximum is still $-\infty$ (the terms are all
# $e^{-\infty} = 0$ then anyway). **Convention:** a row that is $-\infty$ *everywhere* has no
# softmax ($\ell = 0$, so $p = 0/0$); here, as in `torch.softmax`, its output is NaN in every
# entry. Any other row must come out finite.

# %% nbgrader={"grade": false, "grade_id": "plot_online_softmax", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.plots import plot_online_softmax

plot_online_softmax(seq_len=256, block_n=64)
plt.show()

# %% [markdown]
# ## 3. Attention one block of keys at a time
#
# For one query row $q_i$ the scores are $s_{ij} = q_i \cdot k_j / \sqrt{D}$ and the output is
# $o_i = \sum_j p_{ij} v_j$ with $p_{ij} = e^{s_{ij} - m_i} / \ell_i$. Add one more running
# quantity, the un-normalised output, and let the same $\alpha$ re-base it:
#
# $$
# \mathrm{acc}_t = \alpha_t\, \mathrm{acc}_{t-1} + \sum_{j \in B_t} e^{\,s_{ij} - m_t}\, v_j ,
# \qquad \mathrm{acc}_0 = 0 .
# $$
#
# The proof above, applied to each coordinate of $\mathrm{acc}$, gives
# $\mathrm{acc}_T = \sum_j e^{\,s_{ij} - m_T} v_j$, so $o_i = \mathrm{acc}_T / \ell_T$: the division
# happens **once, at the end**. The **log-sum-exp**
# $\mathrm{LSE}_i = \log \sum_j e^{s_{ij}} = m_T + \log \ell_T$ (natural log) is the one number per
# row a backward pass needs to rebuild $p_{ij}$ later, so attention kernels return it next to $O$.
#
# In PyTorch all rows, heads and batches go at once: for $Q$ of shape $(B, H, L_q, D)$ and a block
# `K[:, :, j:j+block_n]` of $n_b$ keys, the scores of the block are a $(B, H, L_q, n_b)$ tensor,
# $m$ and $\ell$ are $(B, H, L_q)$, and $\mathrm{acc}$ is $(B, H, L_q, D)$. The memory this needs is
# $B H L_q n_b$ for the block of scores, against $B H L_q L_k$ for the whole matrix. When $L_k$ is not a multiple of `block_n` the last block is shorter: slicing past the
# end of a tensor simply gives fewer keys, and that block must not be skipped.
#
# **Numbers that large logits need.** Keep $m$, $\ell$ and $\mathrm{acc}$ in float32 whatever the
# input dtype (a float16 running sum loses the small terms) and cast $o$ back to the input dtype.
# A float32 score is only known to about $|s| \cdot 2^{-24}\sqrt{D}$: at $|s| = 10^4$ that is
# $10^{-3}$, enough to move softmax weights visibly for *every* algorithm, PyTorch's included.
# The attention checks therefore use scores up to about 150, already far past the 88.7 where a
# float32 $e^{s}$ overflows, while the softmax checks, which take the logits as given, go to
# $10^4$.

# %% [markdown]
# ## 4. Your code
#
# Write two functions in the next cell. Use PyTorch operations on whole tensors
# (`x.amax(dim=...)`, `torch.maximum`, `torch.exp`, `torch.where`, `.sum(dim=...)`, `@`, slicing
# `x[:, a:b]`, `t[..., None]` to broadcast a per-row value); `torch` and `math` are already imported.
#
# * `online_softmax(x, block_size)`: `x` is a 2-D float tensor (rows, N). Loop over blocks of
#   `block_size` columns to compute the running max `m` and running sum `l` of every row (all rows
#   at once), then return `exp(x - m) / l`, shaped and typed like `x`. Follow the convention for
#   rows that are $-\infty$ everywhere (NaN) and make sure a row that starts with a masked block
#   does not turn into NaN.
# * `tiled_attention(q, k, v, block_n=64)`: `q` is (B, H, Lq, D), `k` and `v` are (B, H, Lk, D).
#   Loop over blocks of `block_n` keys with the running max, running sum and accumulator; return
#   `(o, lse)`: `o` like `q` (shape and dtype), `lse` float32 (B, H, Lq) in natural log. Scale the
#   scores by $1/\sqrt{D}$.
#
# Rules the checks enforce: no `torch.softmax`, `logsumexp` or PyTorch attention; the input is not
# modified; and `tiled_attention` never builds a tensor as large as the score matrix. The memory
# check records the largest tensor any PyTorch operation produced during the call. It allows a block
# of scores for every row (up to $B H L_q \cdot 128$ elements) and tensors the size of the inputs
# and outputs; it fails a tensor as large as one head's whole $L_q \times L_k$ score matrix, on shapes
# where those two cannot be confused.
#
# Keep the cell to function definitions (and constants, if you want any): no imports and no other
# statements. When grading, the tests run in a fresh interpreter that holds only the course's cells and
# this one, not in this notebook: their verdicts are your points, and your feedback shows them under
# each test cell.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math

import torch


# %% nbgrader={"grade": false, "grade_id": "answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
def online_softmax(x, block_size):
    """Softmax over the last dimension of a 2-D tensor x (rows, N), reading x one block of
    `block_size` columns at a time: one pass for the running max and sum, one to write.

    Returns a tensor like x (same shape and dtype) whose finite rows sum to 1. A row that is -inf
    everywhere has no softmax and comes back NaN, as torch.softmax gives.
    """
    ### BEGIN SOLUTION
    rows, n = x.shape
    m = torch.full((rows,), -math.inf, dtype=x.dtype, device=x.device)  # running max per row
    l = torch.zeros(rows, dtype=x.dtype, device=x.device)               # running sum of exp(x - m)
    for start in range(0, n, block_size):
        block = x[:, start:start + block_size]
        m_new = torch.maximum(m, block.amax(dim=1))
        # A row that has seen only -inf keeps m = -inf; subtracting 0 there gives exp(-inf) = 0
        # where exp(-inf - (-inf)) would be NaN.
        m_safe = torch.where(m_new == -math.inf, 0.0, m_new)
        alpha = torch.exp(m - m_safe)  # <= 1: re-bases the old sum onto the larger max
        l = l * alpha + torch.exp(block - m_safe[:, None]).sum(dim=1)
        m = m_new
    return torch.exp(x - m[:, None]) / l[:, None]
    ### END SOLUTION


def tiled_attention(q, k, v, block_n=64):
    """Non-causal attention softmax(q k^T / sqrt(D)) v for (B, H, L, D) tensors, one block of
    `block_n` keys at a time: it never holds more than B*H*Lq*block_n scores.

    Returns (o, lse): o shaped and typed like q; lse float32 (B, H, Lq), the natural-log
    log-sum-exp of each row of scores.
    """
    ### BEGIN SOLUTION
    scale = 1.0 / math.sqrt(q.shape[-1])
    seq_len_k = k.shape[2]
    qf = q.float()  # the running state is float32 whatever the input dtype
    m = torch.full(q.shape[:-1], -math.inf, dtype=torch.float32, device=q.device)
    l = torch.zeros_like(m)
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=torch.float32, device=q.device)
    for start in range(0, seq_len_k, block_n):
        k_block = k[:, :, start:start + block_n].float()  # the last block may be shorter
        v_block = v[:, :, start:start + block_n].float()
        s = (qf @ k_block.transpose(-1, -2)) * scale     # (B, H, Lq, block_n): one block of scores
        m_new = torch.maximum(m, s.amax(dim=-1))
        alpha = torch.exp(m - m_new)
        p = torch.exp(s - m_new[..., None])
        l = l * alpha + p.sum(dim=-1)
        acc = acc * alpha[..., None] + p @ v_block
        m = m_new
    o = acc / l[..., None]
    lse = m + torch.log(l)
    ### END SOLUTION
    return o.to(q.dtype), lse


# %% [markdown] nbgrader={"grade": false, "grade_id": "self_check_intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### Check as you go
#
# Run the next cell after every change to your cell (run your cell and the cells after it again first). It runs the visible shapes of section 5 and gives the same diagnosis the grader gives: for a wrong case, where it goes wrong and the likely cause.

# %% nbgrader={"grade": false, "grade_id": "self_check", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem2 import check

check(online_softmax=online_softmax, tiled_attention=tiled_attention)  # the visible shapes, with the grader's diagnosis

# %% [markdown]
# Stuck? The next cell gives a hint; each run reveals one more step, ending with the idea of the
# solution in words (never the code).

# %% nbgrader={"grade": false, "grade_id": "hint", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.hints import hint

hint("problem2");

# %% [markdown]
# ## 5. Check your work
#
# Each check prints one line per test input: `PASS` or `FAIL`, the largest error against a float64
# reference (`torch.softmax`, or exact attention), and for a failure which rows are wrong and the
# most likely cause. Tolerances: $10^{-6}$ for float32 probabilities, $10^{-12}$ for float64, and
# $10^{-4}$ for float32 attention outputs.

# %% nbgrader={"grade": true, "grade_id": "test_online_softmax", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem2 import SoftmaxCase, check_online_softmax

# Ordinary logits in float64 and float32; N is not always a multiple of block_size.
check_online_softmax(online_softmax, [
    SoftmaxCase(4, 256, 64, "float64"),
    SoftmaxCase(8, 200, 64, "float32", seed=1),
    SoftmaxCase(3, 100, 7, "float32", seed=2),
])

# %% nbgrader={"grade": true, "grade_id": "test_tiled_attention", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem2 import check_tiled_attention

# float32, L a multiple of block_n and not (a shorter last block); output and log-sum-exp.
check_tiled_attention(tiled_attention, [
    Case(1, 2, 128, 64, "float32"),
    Case(2, 2, 200, 32, "float32", seed=1),
])

# %% nbgrader={"grade": true, "grade_id": "test_no_score_matrix", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem2 import check_tiled_attention

# Long enough that one block of scores per row is far smaller than one head's score matrix:
# a tensor as large as the whole matrix fails, even if the values are right.
check_tiled_attention(tiled_attention, [
    Case(1, 2, 600, 32, "float32", seed=3),
    Case(1, 1, 300, 64, "float32", L_k=520, seed=4),
])

# %% [markdown]
# ### What the grader also checks
#
# The cells below hold tests you cannot see. They check, in this order: `online_softmax` with logits
# of size $10^4$ in float32 and float64 (a softmax that does not subtract the maximum returns NaN
# there), rows with $-\infty$ entries (a fully masked first block, a masked block in the middle, and
# a row that is $-\infty$ everywhere, which must come out NaN), a block larger than the row and a
# block of one column; `tiled_attention` on awkward shapes (a single token, lengths that are not
# multiples of 64, different query and key lengths, several batches and heads, head dimensions from
# 16 to 128, float16 and inputs that are not contiguous in memory), with the memory check wherever
# the shape allows it; and `tiled_attention` with scores up to about 150, where $e^{s}$ overflows in
# float32. If the visible checks pass and you followed section 2 and the float32 advice of
# section 3, these will too.

# %% nbgrader={"grade": true, "grade_id": "test_hidden_softmax_stability", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem2 import SoftmaxCase, check_online_softmax

# Hidden: huge logits, -inf entries (masked blocks, a fully masked row), block larger than N, block of 1.
### BEGIN HIDDEN TESTS
check_online_softmax(online_softmax, [
    SoftmaxCase(8, 300, 64, "float32", logit_scale=1e4, seed=10),
    SoftmaxCase(4, 129, 32, "float64", logit_scale=1e4, seed=11),
    SoftmaxCase(6, 200, 50, "float32", masked=("first_block", "middle_block", "row"), seed=12),
    SoftmaxCase(5, 10, 64, "float32", seed=13),
    SoftmaxCase(2, 33, 1, "float64", logit_scale=100, seed=14),
    SoftmaxCase(4, 96, 32, "float32", logit_scale=1e4, masked=("first_block",), seed=15),
])
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_attention_shapes", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem2 import check_tiled_attention

# Hidden: awkward lengths, Lq != Lk, several batches and heads, every head dim, float16, strided inputs.
### BEGIN HIDDEN TESTS
check_tiled_attention(tiled_attention, [
    Case(1, 1, 1, 64, "float32", seed=20),
    Case(2, 3, 17, 32, "float32", seed=21),
    Case(3, 2, 65, 16, "float32", seed=22),
    Case(1, 2, 130, 64, "float32", L_k=70, seed=23),
    Case(2, 2, 700, 32, "float32", seed=24),
    Case(2, 2, 256, 64, "float16", "bshd", seed=25),
    Case(1, 2, 192, 128, "float32", "strided_d", seed=26),
])
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_large_logits", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.inputs import Case
from autograder.problems.problem2 import check_tiled_attention

# Hidden: scores up to about 150 (Q times 30), where exp overflows in float32.
### BEGIN HIDDEN TESTS
check_tiled_attention(tiled_attention, [
    Case(1, 2, 333, 64, "float32", seed=60, logit_scale=30),
    Case(2, 2, 200, 32, "float32", seed=61, logit_scale=30),
    Case(1, 1, 150, 64, "float32", L_k=77, seed=62, logit_scale=30),
    Case(2, 3, 96, 16, "float32", seed=63, logit_scale=30),
])
### END HIDDEN TESTS

# %% [markdown]
# ## 6. How fast is it?
#
# On a GPU the next cell times your `tiled_attention` against the naive PyTorch attention (which
# stores the whole score matrix) and against PyTorch's `scaled_dot_product_attention` with two of
# its backends pinned (FlashAttention-2 and cuDNN), with `triton.testing.do_bench` medians. Expect
# your version to use far less memory than the naive one and to be much *slower* than SDPA: every
# key block costs a handful of separate GPU operations launched from a Python loop, and each of them
# writes its result to GPU memory and reads it back. A fused kernel keeps the block of scores on the
# chip and does the whole loop in one launch: that is what you build in problem 3. On a CPU, or
# while grading, the cell says why it does nothing.

# %% nbgrader={"grade": false, "grade_id": "benchmark", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem2 import benchmark

benchmark(tiled_attention)

# %% [markdown] nbgrader={"grade": false, "grade_id": "outro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 7. What you built, and what comes next
#
# You computed a softmax in one pass over blocks, proved it exact, and built attention on it that
# holds one block of scores at a time: its memory grows with $L$, not $L^2$, and it survives logits
# that overflow a naive `exp`. What it does not yet have is speed: the Python loop launches many
# small operations per block and sends every intermediate through GPU memory. Problem 3 writes the
# same loop as one Triton kernel, with the block of scores in registers and `exp2` in place of
# `exp`, and it runs as fast as PyTorch's own FlashAttention.
