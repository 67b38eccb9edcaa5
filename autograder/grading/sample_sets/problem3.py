"""Problem 3's sample submissions: the reference, the untouched release, typical mistakes in the
online softmax, submissions that misbehave as submissions, and faults only a GPU can have."""
from ..sample import Sample

SDPA_CHEAT = '''
import torch.nn.functional as F


def flash_attention_forward(q, k, v):
    # Let PyTorch do it: fast, correct, and not a Triton kernel.
    o = F.scaled_dot_product_attention(q, k, v)
    s = (q.float() @ k.float().transpose(-1, -2)) / q.shape[-1] ** 0.5
    return o, torch.logsumexp(s, dim=-1)
'''

NOISY_WRAPPER = '''
import sys
import warnings

_quiet_forward = flash_attention_forward


def flash_attention_forward(q, k, v):
    # Correct, but chatty on stderr: grading must not zero a test for a warning.
    warnings.warn("this kernel has not been tuned yet", UserWarning)
    print("debug: launching kernel", file=sys.stderr)
    return _quiet_forward(q, k, v)
'''

PATCH_CHECKS = '''
import autograder.checks as _checks

_checks.assert_cases = lambda *args, **kwargs: print("All cases passed.")
'''

PATCH_ISCLOSE = '''
import torch

torch.isclose = lambda a, b, **kwargs: torch.ones_like(a, dtype=torch.bool)
'''

MASK_LINES = '''    if MASK_KEYS:
        # Padded keys were loaded as zeros, which would score 0, not -inf.
        qk = tl.where(key_idx[None, :] < seq_len_k, qk, float("-inf"))
'''

SAMPLES = (
    Sample("correct", "the reference solution", 10),
    Sample("untouched", "the released notebook, nothing filled in", 0, untouched=True,
           expected_cause="not_implemented"),
    Sample("unmasked_tail", "keys past the end are not masked (the seed's bug)", 6,
           edits=((MASK_LINES, ""),), expected_cause="unmasked_tail"),
    Sample("correct_noisy", "correct, but warns and prints to stderr while running", 10,
           extra_cell=NOISY_WRAPPER),
    Sample("no_alpha_rescale", "acc is not rescaled by alpha", 1,
           edits=(("    acc = acc * alpha[:, None]\n", ""),), expected_cause="no_acc_rescale"),
    Sample("no_normalisation", "acc is never divided by l_i", 1,
           edits=(("    o = acc / l_i[:, None]\n", "    o = acc\n"),), expected_cause="no_normalise"),
    Sample("exp_not_exp2", "tl.exp where tl.math.exp2 is meant", 0,
           edits=(("alpha = tl.math.exp2(", "alpha = tl.exp("), ("p = tl.math.exp2(", "p = tl.exp(")),
           expected_cause="wrong_scale"),
    Sample("sdpa_instead_of_kernel", "the answer cell defines a wrapper that calls scaled_dot_product_attention", 0,
           answer_suffix=SDPA_CHEAT, expected_note="answer cell rejected"),
)

# Submissions that misbehave as submissions: crash, exit, loop, tamper, arrive broken. Misbehaviours
# that leave the notebook's kernel running share a submission, each in a cell of its own (in this
# order, after the kernel cell) that prints RAN and its name once it has done its part, so that the
# grading tests can see that every one of them ran; a submission's effects on intake are combined
# the same way.
RAN = "misbehaviour ran: "


def _ran(name: str) -> str:
    return f"print({RAN + name!r})\n"


# A cell that never finishes (interrupted at the cell time limit), after a sys.exit() (IPython
# catches it) and a wrapper that writes to stderr on every call (the checks send stderr to stdout,
# or nbgrader would zero the test cell); the cell after them shows that the notebook went on.
MISBEHAVING_CELLS = (
    NOISY_WRAPPER + _ran("noisy_wrapper"),
    "import sys\n\n" + _ran("sys_exit") + "sys.exit('done early')",
    _ran("endless_cell") + "while True:\n    pass",
    _ran("after_the_endless_cell"),
)
# Checks patched in the notebook's kernel: the grade is the judge's, who never ran them.
PATCHING_CELLS = (
    PATCH_CHECKS + _ran("patched_checks"),
    PATCH_ISCLOSE + "assert torch.isclose(torch.zeros(1), torch.ones(1)).all()\n" + _ran("patched_isclose"),
)

ADVERSARIAL = (
    Sample("kernel_exits", "os._exit(1) right after the kernel: the notebook's feedback stops there, the judge "
           "still grades the answer cell", 10, extra_cell="import os\nos._exit(1)", expected_note="kernel died"),
    Sample("misbehaving_notebook", "right answer; handed in as my_problem3.ipynb asking for a Julia kernel, a "
           "locked test cell replaced by `pass` and another deleted; cells that write to stderr, call sys.exit() "
           "and never finish: graded with Python, the locked cells restored, every test run by the judge", 10,
           extra_cells=MISBEHAVING_CELLS, filename="my_problem3.ipynb", kernelspec="julia-1.10",
           locked_edits=(("test_tail_block", "pass"), ("test_full_blocks", None)),
           expected_note="was named my_problem3.ipynb",
           expected_notes=("kernel 'julia-1.10'", "locked cells edited", "locked cells deleted")),
    Sample("invalid_json", "a truncated file that is not JSON", None,
           raw='{"cells": [', expected_note="not a readable notebook"),
    Sample("no_notebook", "an empty submission folder", None, missing=True, expected_note="no notebook submitted"),
    Sample("patched_checks", "the unmasked-tail bug, plus cells that make assert_cases pass and torch.isclose "
           "always true: they run, and change nothing, as the tests run in the judge", 6, edits=((MASK_LINES, ""),),
           extra_cells=PATCHING_CELLS),
    Sample("patch_in_answer_cell", "the answer cell itself patches the checks at import time", 0, untouched=True,
           answer_suffix=PATCH_CHECKS, expected_note="answer cell rejected"),
)


# Faults only a GPU can have. Graded by the GPU-marked tests on a GPU runner.
ILLEGAL_ACCESS = '''
@triton.jit
def _scribble(ptr):
    tl.store(ptr + (1 << 40), 1.0)  # far outside any allocation


_scribble[(1,)](torch.empty(1, device="cuda"))
torch.cuda.synchronize()
'''

HOG_MEMORY = '''
_hog = []
while True:  # take the GPU's memory and keep it
    try:
        _hog.append(torch.empty(1 << 30, dtype=torch.uint8, device="cuda"))
    except torch.OutOfMemoryError:
        break
'''

ENDLESS_KERNEL = '''
@triton.jit
def _spin(counter):
    while tl.atomic_add(counter, 1) >= 0:  # an atomic per turn: the compiler cannot drop the loop
        pass


_spin[(1,)](torch.zeros(1, device="cuda", dtype=torch.int64))  # 2**63 turns to wrap
torch.cuda.synchronize()
'''

GPU_FAULTS = (
    # Each fault is in a cell of its own: it wrecks the notebook's run (the feedback), while the judge
    # grades the answer cell, which is right, in a fresh sandboxed process once the notebook is done.
    Sample("illegal_memory_access", "launches a kernel that writes far out of bounds", 10,
           extra_cell=ILLEGAL_ACCESS),
    Sample("gpu_memory_hog", "takes GPU memory until allocation fails and keeps it, until the notebook ends", 10,
           extra_cell=HOG_MEMORY),
    Sample("endless_gpu_kernel", "launches a GPU kernel that never ends: nbgrader gives up on the notebook", 10,
           extra_cell=ENDLESS_KERNEL, expected_note="CellTimeoutError"),
    Sample("z_correct_after_faults", "the reference solution, graded after the faults above", 10),
)


# Right answers that ask more of a GPU than the reference: full correctness, fewer performance
# points. The counted cost grades them without a GPU; scripts/cost_vs_timing.py compares that
# with the timing on a GPU.
PV_DOT = "    acc = tl.dot(p.to(v.dtype), v, acc)        # 16-bit operands, float32 accumulation\n"
EXTRA_DOTS = '''    p16 = p.to(v.dtype)
    acc = tl.dot(p16, v, acc)
    # A check that costs three more products of the block's size: (2p)v - p(2v) is zero.
    twice_p = (p * 2).to(v.dtype)
    drift = tl.dot(twice_p, v) - tl.dot(p16, v + v)
    acc = acc + drift * tl.dot(p16, v)
'''

PERFORMANCE = (
    Sample("extra_dots", "right values, but three more dot products per key block than needed", 10,
           edits=((PV_DOT, EXTRA_DOTS),), expected_performance=0),
    Sample("float32_dot", "right values, but p @ v in float32 (TF32, Triton's default for float32 operands)", 10,
           edits=((PV_DOT, "    acc = tl.dot(p, v.to(tl.float32), acc)\n"),), expected_performance=0),
    Sample("float32_dot_ieee", "right values, but p @ v in full float32 (input_precision='ieee': CUDA cores)", 10,
           edits=((PV_DOT, "    acc = tl.dot(p, v.to(tl.float32), acc, input_precision=\"ieee\")\n"),),
           expected_performance=0),
    Sample("product_without_dot", "right values, but p @ v as a broadcast multiply and a sum (CUDA cores, not "
           "tensor cores)", 10,
           edits=((PV_DOT, "    acc = acc + tl.sum(p[:, :, None] * v.to(tl.float32)[None, :, :], axis=1)\n"),),
           expected_performance=0),
)
