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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/flash-attention-course/flash-attention-course/blob/main/notebooks/problem2b/problem2b.ipynb)
#
# Runs in Colab (GPU or CPU), on a laptop without a GPU, or on a GPU machine: [how to start, and what each can do](https://github.com/flash-attention-course/flash-attention-course/blob/main/README.md#start).

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Problem 2b · A first Triton kernel: the online softmax, one row per program
#
# In problem 2 you computed a softmax in one pass over blocks of columns, with a running maximum
# and a running sum. Here you write the same algorithm as a **Triton kernel**, before problem 3
# puts it inside FlashAttention. The kernel is small on purpose: one program per row, a loop over
# blocks of columns, a second loop that writes. Everything a Triton kernel is made of shows up
# once: programs and their ids, pointers and strides, blocks of offsets, masks, loads and stores.
#
# **You will learn** what a Triton program is and how a grid of them covers a tensor, how a kernel
# finds its data through pointers and strides (so that it works on any memory layout), why the
# last block of a row needs a mask and which value its missing lanes must read, and how fast a
# softmax can be at all: it is limited by memory bandwidth, not arithmetic.
#
# **How this notebook works.** Run the cells from the top. The first code cell installs the
# course when it is missing (in Colab) and picks the GPU, or Triton's CPU interpreter when there
# is no GPU that Triton supports (everything here works on a laptop, only slower). You edit one
# cell, marked *Your code*: the body of one kernel. The self-check after it says what is wrong and
# why, a hint cell reveals one step at a time, and the check cells of section 4 earn the points;
# the grader runs more checks of the same kind on inputs you do not see.

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
# ## 1. What a Triton program is
#
# A GPU runs thousands of threads at once. Triton lets you think one level up: you write a
# **program**, a function decorated with `@triton.jit` that works on whole **blocks** of numbers
# (vectors or tiles), and you launch a **grid** of copies of it. All copies run the same code;
# each asks `tl.program_id(0)` which copy it is and picks its share of the work from that number.
# Triton spreads each program's block over the threads of one streaming multiprocessor for you.
#
# Here the share is simple: **program `row` computes the softmax of row `row`.** The launch
#
# ```python
# softmax_kernel[(n_rows,)](x, y, n_cols, *x.stride(), *y.stride(), BLOCK=block_size)
# ```
#
# starts `n_rows` programs (the grid is the tuple in brackets), with the tensors passed as
# **pointers** to their first element and the sizes and strides as integers.
#
# **Pointers and strides.** A 2-D tensor is one stretch of memory; element `(i, j)` sits at
# `x + i * stride_xm + j * stride_xn` (in elements, not bytes: Triton scales by the element
# size). A row-major matrix has strides `(n_cols, 1)`, a slice `x[:, :n]` of a wider one
# `(wider, 1)`, a transposed one `(1, n_rows)`. A kernel that uses the strides it is given works
# on all of them; one that assumes `n_cols` and `1` silently reads the wrong numbers.
#
# **Blocks of offsets.** `tl.arange(0, BLOCK)` is the vector `0, 1, ..., BLOCK - 1` (`BLOCK`
# must be a power of two and known when the kernel compiles: a `tl.constexpr`). Adding it to a
# pointer gives a block of pointers, and `tl.load` reads them all at once:
#
# ```python
# cols = tl.arange(0, BLOCK)
# offs = start + cols                       # the column numbers of this block
# x = tl.load(x_row + offs * stride_xn)     # BLOCK values of this row
# ```
#
# **Masks.** When `n_cols` is not a multiple of `BLOCK`, the last block runs past the end of the
# row. `tl.load(ptrs, mask=offs < n_cols, other=v)` reads only the lanes where the mask is true and
# puts `v` in the others; `tl.store(ptrs, values, mask=offs < n_cols)` writes only those lanes.
# Without a mask the kernel reads (and writes) whatever memory follows the row: the next row, or
# past the end of the tensor, which on a GPU is a crash or silent corruption. (Triton's CPU
# interpreter does not stop an out-of-bounds access at all; the checks here name what it did to
# the output.)
#
# The picture shows a 4 x 200 matrix read in blocks of 64 columns: each program walks its row,
# and the last block has 56 lanes that do not exist.

# %% nbgrader={"grade": false, "grade_id": "plot_row_blocks", "locked": true, "schema_version": 3, "solution": false, "task": false}
import matplotlib.pyplot as plt

from autograder.problems.problem2b import plot_row_blocks

plot_row_blocks(rows=4, cols=200, block=64)
plt.show()

# %% [markdown]
# ## 2. The online softmax in a kernel: two passes over the row
#
# Problem 2's recurrence, for one row of logits $x_1, \dots, x_N$ read in blocks $B_1, \dots, B_T$:
#
# $$
# m_0 = -\infty,\ \ \ell_0 = 0, \qquad
# m_t = \max\bigl(m_{t-1}, \max_{j \in B_t} x_j\bigr), \qquad
# \ell_t = e^{\,m_{t-1} - m_t}\,\ell_{t-1} + \sum_{j \in B_t} e^{\,x_j - m_t},
# $$
#
# and then $p_j = e^{\,x_j - m_T} / \ell_T$. In the kernel, $m$ and $\ell$ are two float32 numbers
# per program (`m_i`, `l_i`), whatever the input dtype: a float16 sum of thousands of terms loses
# the small ones, and $e^{x}$ of a float16 logit overflows at $x = 11$.
#
# * **Pass 1** loads each block and folds it into `(m_i, l_i)`. `tl.max(x, axis=0)` and
#   `tl.sum(x, axis=0)` reduce a block to one number; `tl.maximum`, `tl.exp` and `tl.where` work
#   lane by lane.
# * **Pass 2** loads each block again and stores $e^{x - m}/\ell$. It cannot start earlier: until
#   the last block is read, neither the maximum nor the sum is known. (Writing each block during
#   pass 1 with the running values of that moment is a classic bug: the early blocks come out
#   divided by a sum that is still growing.)
#
# **What the missing lanes must hold.** The padding lanes of the last block take part in
# `tl.max` and `tl.sum` like any other lane. A lane must therefore contribute nothing: it may not
# raise the max, and its $e^{x - m}$ must be 0. Only $x = -\infty$ does both. A lane loaded as 0
# (the `other=0.0` one might write, or the value an unspecified `other` happens to give) counts as
# a logit of 0: it adds $e^{-m}$ to the sum, and in a row of negative logits it even becomes the
# max. This is the same bug as the unmasked tail of FlashAttention in problem 3.
#
# **Rows of $-\infty$.** Attention masks (the causal mask, a sliding window) set logits to
# $-\infty$. A row whose first blocks are all $-\infty$ has $m = -\infty$ after them, and
# $e^{m_{t-1} - m_t} = e^{-\infty - (-\infty)}$ is NaN: as in problem 2, subtract 0 instead of the
# max while the max is still $-\infty$. **Convention** (problem 2's, and `torch.softmax`'s): a row
# that is $-\infty$ *everywhere* has no softmax and comes out NaN ($0/0$). The seed's masks never
# make one (every query sees itself), so in attention such a row never arises; every other row must
# come out finite.
#
# **How much memory traffic.** Pass 1 reads the row, pass 2 reads it again and writes it: three
# row-sized transfers. A softmax cannot do with fewer than two (read $x$ once, write $y$ once);
# Triton's tutorial kernel reaches two by holding a whole row in registers, which works only while
# a row fits. On a GPU a row read twice in quick succession often comes from the L2 cache the
# second time, so the two-pass kernel gets close to the bound anyway: section 5 measures it.
#
# The picture is problem 2's recurrence on one row of 256 logits in blocks of 64, as pass 1 of one
# program runs it: the running sum drops whenever a block brings a larger max ($\alpha < 1$).

# %% nbgrader={"grade": false, "grade_id": "plot_online_softmax", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.plots import plot_online_softmax

plot_online_softmax(seq_len=256, block_n=64)
plt.show()

# %% [markdown]
# ## 3. Your code
#
# Write the body of `softmax_kernel` in the next cell, in two places:
#
# * **inside the pass-1 loop**: load the block `x_row + offs * stride_xn` with a mask and the right
#   `other`, cast it to float32 (`.to(tl.float32)`), and update `m_i` and `l_i`;
# * **pass 2**: a second loop over the same blocks that loads each again and stores
#   $e^{x - m}/\ell$ at `y_row + offs * stride_yn`, cast to the output's element type
#   (`.to(Y.dtype.element_ty)`), with the same mask.
#
# What is given: the program's row, the pointers to the row's first element in `X` and `Y`, the
# column offsets `cols`, the initial `m_i` and `l_i`, and the launch (the cell after yours).
# Keep the cell to `@triton.jit` functions (and constants, if you want any): no imports, no other
# statements. Do not call PyTorch's softmax: the checks look for that and give no points for it.
# When grading, the tests run in a fresh interpreter that holds only the course's cells and this one,
# not in this notebook: their verdicts are your points, and your feedback shows them under each test
# cell.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import torch
import triton
import triton.language as tl


# %% nbgrader={"grade": false, "grade_id": "softmax_kernel", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def softmax_kernel(X, Y, n_cols, stride_xm, stride_xn, stride_ym, stride_yn, BLOCK: tl.constexpr):
    """Program `row` writes softmax(X[row, :]) into Y[row, :], reading the row in blocks of BLOCK columns.

    X, Y       pointers to the first element of the input and the output (same shape and dtype)
    n_cols     the length of a row (need not be a multiple of BLOCK)
    stride_*   element strides: X[i, j] is at X + i * stride_xm + j * stride_xn, likewise Y
    BLOCK      columns per block, a power of two
    """
    row = tl.program_id(0)                       # this program's row
    x_row = X + row.to(tl.int64) * stride_xm     # X[row, 0] (int64: rows * stride can pass 2**31)
    y_row = Y + row.to(tl.int64) * stride_ym     # Y[row, 0]
    cols = tl.arange(0, BLOCK)                   # 0, 1, ..., BLOCK - 1
    m_i = tl.full([], float("-inf"), tl.float32)  # running max of the row (float32)
    l_i = tl.full([], 0.0, tl.float32)            # running sum of exp(x - m_i)

    # Pass 1: the running max and sum, one block of columns at a time.
    for start in range(0, n_cols, BLOCK):
        offs = start + cols                      # this block's column numbers
        ### BEGIN SOLUTION
        mask = offs < n_cols
        # Missing columns read -inf: they raise no max and add exp(-inf) = 0 to the sum.
        x = tl.load(x_row + offs * stride_xn, mask=mask, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m_i, tl.max(x, axis=0))
        # While the row has seen only -inf, subtract 0: exp(-inf - (-inf)) would be NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)             # <= 1: re-bases the old sum onto the new max
        l_i = l_i * alpha + tl.sum(tl.exp(x - m_safe), axis=0)
        m_i = m_new
        ### END SOLUTION

    # Pass 2: read every block again and write its probabilities.
    ### BEGIN SOLUTION
    m_safe = tl.where(m_i == float("-inf"), 0.0, m_i)  # a row of -inf: 0 / 0 = NaN, as torch.softmax
    for start in range(0, n_cols, BLOCK):
        offs = start + cols                      # this block's column numbers
        mask = offs < n_cols
        x = tl.load(x_row + offs * stride_xn, mask=mask, other=float("-inf")).to(tl.float32)
        y = tl.exp(x - m_safe) / l_i
        tl.store(y_row + offs * stride_yn, y.to(Y.dtype.element_ty), mask=mask)
    ### END SOLUTION


# %% nbgrader={"grade": false, "grade_id": "kernel", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem2b import default_block
from autograder.validation import check_softmax_inputs


def triton_softmax(x, block_size=None):
    """Softmax over the last dimension of a 2-D tensor x (rows, n_cols): one program per row.

    Returns a new tensor like x (shape and dtype). `block_size`: columns per block, a power of two
    (default: the row's length rounded up to one, at most 2048).
    """
    block_size = block_size or default_block(x.shape[-1] if isinstance(x, torch.Tensor) else 1)
    check_softmax_inputs(x, block_size)
    n_rows, n_cols = x.shape
    y = torch.empty_like(x)
    grid = (n_rows,)  # one program per row
    softmax_kernel[grid](x, y, n_cols, *x.stride(), *y.stride(), BLOCK=block_size,
                         num_warps=8 if block_size >= 2048 else 4)
    return y


# %% [markdown]
# ### Check as you go, and a hint when you are stuck
#
# Run the next cell after every change to your cell (run the *Your code* cell and the kernel cell
# again first, so that the launch picks up your kernel). It runs the visible cases of section 4
# and gives the same diagnosis the grader gives: the rows that are wrong and the likely cause.
# If you are stuck, the cell after it is a hint ladder: each run reveals one more step, two nudges
# first and then the idea in words (never the code). `hint("problem2b", 1)` shows a step again.

# %% nbgrader={"grade": false, "grade_id": "self_check", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem2b import check

check(triton_softmax)  # the visible cases, with the grader's diagnosis when one is wrong

# %% nbgrader={"grade": false, "grade_id": "hints", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.hints import hint

hint("problem2b");  # each run reveals the next step

# %% [markdown]
# ## 4. Check your work
#
# Each check prints one line per input: `PASS` or `FAIL`, the largest error against
# `torch.softmax` in float64 of the same inputs, and for a failure the rows that are wrong and the
# most likely cause. Your kernel computes in float32 and rounds each probability once to the
# output's dtype, so the tolerance is about two units in its last place: $10^{-3}$ relative in
# float16, $8\cdot10^{-3}$ in bfloat16, $10^{-5}$ in float32 (where the float32 errors of `exp`
# and of the sum are what is left), plus a tiny absolute term for probabilities near 0.

# %% nbgrader={"grade": true, "grade_id": "test_full_blocks", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem2b import RowsCase, check_softmax_kernel

# Rows that are whole numbers of blocks, float32 and float16.
check_softmax_kernel(triton_softmax, [
    RowsCase(4, 256, 64, "float32"),
    RowsCase(6, 128, 32, "float16", seed=1),
])

# %% nbgrader={"grade": true, "grade_id": "test_tail_block", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem2b import RowsCase, check_softmax_kernel

# 200 columns in blocks of 64: the last block has 8 columns and 56 lanes that do not exist.
check_softmax_kernel(triton_softmax, [
    RowsCase(5, 200, 64, "float32", seed=2),
    RowsCase(3, 100, 32, "float16", seed=3),
])

# %% [markdown]
# ### What the grader also checks
#
# The cells below hold tests you cannot see. They check, in this order: awkward shapes (a single
# column, a block longer than the row, many rows) and memory layouts (rows followed by unused
# memory, a transposed matrix); rows masked by the seed's causal, sliding-window and sink masks,
# and a row that is $-\infty$ everywhere (NaN, the convention of section 2); and logits from about
# 100 to $10^4$ in float32, float16 and bfloat16, where $e^{x}$ without the max overflows. If the visible
# checks pass and you followed section 2, these will too.

# %% nbgrader={"grade": true, "grade_id": "test_hidden_shapes_layouts", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem2b import RowsCase, check_softmax_kernel

# Hidden: one column, a block longer than the row, many rows, padded rows, a transposed matrix.
### BEGIN HIDDEN TESTS
check_softmax_kernel(triton_softmax, [
    RowsCase(20, 1, 16, "float32", seed=10),
    RowsCase(4, 40, 64, "float16", seed=11),
    RowsCase(24, 33, 16, "float32", seed=12),
    RowsCase(4, 130, 32, "float16", "padded", seed=13),
    RowsCase(5, 72, 32, "float32", "transposed", seed=14),
])
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_masks", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem2b import RowsCase, check_softmax_kernel

# Hidden: the seed's causal, window and sink masks (whole blocks of -inf), and a row of -inf (NaN).
### BEGIN HIDDEN TESTS
check_softmax_kernel(triton_softmax, [
    RowsCase(6, 160, 32, "float32", causal=True, seed=20),
    RowsCase(6, 200, 32, "float16", window=40, seed=21),
    RowsCase(6, 200, 32, "float32", window=40, sink=4, seed=22),
    RowsCase(4, 96, 32, "float32", masked_row=True, seed=23),
])
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test_hidden_large_logits", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem2b import RowsCase, check_softmax_kernel

# Hidden: logits of 40 to 1e4, where exp(x) without the max overflows float32; float32, float16, bfloat16.
### BEGIN HIDDEN TESTS
check_softmax_kernel(triton_softmax, [
    RowsCase(4, 300, 64, "float32", logit_scale=40, seed=30),
    RowsCase(4, 129, 32, "float16", logit_scale=40, seed=31),
    RowsCase(4, 256, 64, "bfloat16", logit_scale=40, seed=32),
    RowsCase(4, 200, 64, "float32", logit_scale=1e4, seed=33),
])
### END HIDDEN TESTS

# %% [markdown]
# ## 5. How fast is it?
#
# A softmax does a handful of operations per element and moves every element through memory at
# least twice (read $x$, write $y$), so its speed is set by **memory bandwidth**: the right unit is
# GB/s, $2 \cdot$ rows $\cdot$ cols $\cdot$ bytes per element over the time, next to what the GPU's
# memory can deliver. On a GPU the next cell times your kernel against `torch.softmax` (and the
# course's reference kernel, where the course's sources are at hand) on float16 matrices of growing
# rows, with `triton.testing.do_bench` medians, and reports each as GB/s and as a share of the GPU's
# bandwidth (its nominal peak and a measured device-to-device copy). On the CPU interpreter there
# is nothing meaningful to time, and the cell says so.

# %% nbgrader={"grade": false, "grade_id": "benchmark", "locked": true, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem2b import benchmark

benchmark(triton_softmax)

# %% [markdown]
# ### Performance points (2 of the 12)
#
# The last graded cell times your kernel against the course's reference kernel, on the same GPU,
# in the same run, on the same inputs, taking turns over several rounds: the grade is the **ratio**
# of the two times, so it means the same on any GPU. A ratio of at most 1.3 earns both points, at
# most 1.6 one point, anything slower none; a kernel that fails the self-check earns none, however
# fast. Under the CPU interpreter the ratio measures how much work your kernel does rather than how fast a GPU would run it.
# Without the course's `solutions/` folder (a learner's install) the cell only says that it is
# measured at grading time.

# %% nbgrader={"grade": true, "grade_id": "test_performance", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from autograder.problems.problem2b import performance_points

# Performance: your kernel's time over the reference kernel's, on the same GPU in the same run.
# Ratio <= 1.3 earns both points, <= 1.6 one; a kernel that fails the self-check earns none.
# Under the CPU interpreter the ratio measures how much work the kernel does, not GPU speed.
performance_points(triton_softmax)

# %% [markdown] nbgrader={"grade": false, "grade_id": "outro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 6. What you built, and what comes next
#
# Your first Triton kernel: a grid of programs, one per row, each finding its row through pointers
# and strides, walking it in masked blocks with problem 2's running max and sum, and writing it in a
# second pass, at close to the speed the GPU's memory allows. Problem 3 keeps all of it and adds
# two loads and a `tl.dot`: the "row" becomes the scores of a block of queries against a block of
# keys, computed on the fly and never stored, and the second pass disappears, because the
# un-normalised output is rescaled by the same $\alpha$ as the sum and divided once at the end.
