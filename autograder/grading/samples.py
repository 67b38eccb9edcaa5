"""Sample submissions, built from the source notebook so they can never drift from it.

Each sample is the student release notebook with the student's cell filled in by the
reference solution, after one small, typical edit (or with a cell added after the kernel).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from ..notebook_code import cell_by_id, read, strip_markers


@dataclass(frozen=True)
class Sample:
    name: str
    description: str
    expected_points: float | None     # what it deserves out of the problem's total; None: no grade, a reason
    edits: tuple = ()                 # (old, new) replacements in the solution code
    untouched: bool = False           # leave the student's cell as released
    extra_cell: str = ""              # code cell appended after the kernel cell
    expected_cause: str = ""          # Finding.code the report should name
    # Submission-level faults (what reaches the grader, rather than what the kernel computes):
    locked_edits: tuple = ()          # (grade_id, new source, or None to delete the cell)
    kernelspec: str = ""              # a different kernel name in the notebook's metadata
    filename: str = ""                # hand the notebook in under another name
    raw: str | None = None            # hand in this text instead of a notebook
    missing: bool = False             # hand in an empty folder
    expected_note: str = ""           # text the grade report's notes or problem must contain
    answer_suffix: str = ""           # code appended to the student's answer cell
    # Performance points it deserves; None: all of them when expected_points is the full
    # correctness score (the kernel is right, as fast as the reference), else none.
    expected_performance: float | None = None


def expected_score(sample: Sample, assignment: str) -> float | None:
    """What the sample deserves out of its problem's total (correctness plus performance)."""
    from ..problems import CORRECTNESS_POINTS, performance_points

    if sample.expected_points is None:
        return None
    if sample.expected_performance is not None:
        return sample.expected_points + sample.expected_performance
    full = sample.expected_points == CORRECTNESS_POINTS
    return sample.expected_points + (performance_points(assignment) if full else 0)


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

PROBLEM3_SAMPLES = (
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

# Submissions that misbehave as submissions: crash, exit, loop, tamper, arrive broken.
PROBLEM3_ADVERSARIAL = (
    Sample("kernel_exits", "os._exit(1) right after the kernel: the notebook's feedback stops there, the judge "
           "still grades the answer cell", 10, extra_cell="import os\nos._exit(1)", expected_note="kernel died"),
    Sample("sys_exit", "sys.exit() in a cell: IPython catches it and grading goes on", 10,
           extra_cell="import sys\nsys.exit('done early')"),
    Sample("endless_cell", "a cell that never finishes: interrupted at the cell time limit", 10,
           extra_cell="while True:\n    pass"),
    Sample("edited_test", "a locked test cell replaced by `pass`: nbgrader restores it", 10,
           locked_edits=(("test_tail_block", "pass"),), expected_note="locked cells edited"),
    Sample("deleted_test", "a locked test cell deleted: the judge runs every test all the same", 10,
           locked_edits=(("test_tail_block", None),), expected_note="locked cells deleted"),
    Sample("other_kernelspec", "asks for a Julia kernel: graded with Python", 10,
           kernelspec="julia-1.10", expected_note="kernel 'julia-1.10'"),
    Sample("renamed_notebook", "handed in as my_problem3.ipynb", 10,
           filename="my_problem3.ipynb", expected_note="was named my_problem3.ipynb"),
    Sample("invalid_json", "a truncated file that is not JSON", None,
           raw='{"cells": [', expected_note="not a readable notebook"),
    Sample("no_notebook", "an empty submission folder", None, missing=True, expected_note="no notebook submitted"),
    Sample("patched_checks", "nothing implemented, but a cell makes assert_cases always pass", 0, untouched=True,
           extra_cell=PATCH_CHECKS, expected_note="not in the judge's clean run"),
    Sample("patched_isclose", "the unmasked-tail bug, plus a cell that makes torch.isclose always true", 6,
           edits=((MASK_LINES, ""),), extra_cell=PATCH_ISCLOSE, expected_note="not in the judge's clean run"),
    Sample("patch_in_answer_cell", "the answer cell itself patches the checks at import time", 0, untouched=True,
           answer_suffix=PATCH_CHECKS, expected_note="answer cell rejected"),
)

class _SampleSets(Mapping):
    """{assignment: samples}: problem 3's are in this module, the others' in sample_sets/<assignment>.py.

    Loaded on first use, so a sample-set module may import this one without a circular import.
    """

    def __init__(self, attribute: str, problem3):
        self._attribute, self._problem3, self._loaded = attribute, problem3, None

    def _load(self) -> dict:
        if self._loaded is None:
            import importlib

            from .. import problems

            found = {"problem3": self._problem3}
            for assignment in problems.ASSIGNMENTS:
                if assignment != "problem3":
                    module = importlib.import_module(f"{__package__}.sample_sets.{assignment}")
                    found[assignment] = tuple(getattr(module, self._attribute, ()))
            self._loaded = found
        return self._loaded

    def __getitem__(self, assignment):
        return self._load()[assignment]

    def __iter__(self):
        return iter(self._load())

    def __len__(self):
        return len(self._load())


SAMPLES = _SampleSets("SAMPLES", PROBLEM3_SAMPLES)
ADVERSARIAL = _SampleSets("ADVERSARIAL", PROBLEM3_ADVERSARIAL)


def apply_edits(code: str, edits) -> str:
    for old, new in edits:
        if old not in code:
            raise ValueError(f"sample edit no longer applies to the solution: {old.strip()[:60]!r}")
        code = code.replace(old, new)
    return code


def build_submission(sample: Sample, source_nb, release_nb, student_cell: str, kernel_cell: str):
    """The release notebook as this sample's student would hand it in."""
    nb = copy.deepcopy(release_nb)
    if not sample.untouched:
        solution = strip_markers(cell_by_id(source_nb, student_cell).source)
        cell_by_id(nb, student_cell).source = apply_edits(solution, sample.edits)
    if sample.answer_suffix:
        cell_by_id(nb, student_cell).source += "\n" + sample.answer_suffix
    if sample.extra_cell:
        index = nb.cells.index(cell_by_id(nb, kernel_cell)) + 1
        extra = nbformat.v4.new_code_cell(sample.extra_cell.strip("\n"))
        extra.id = f"student-added-{sample.name}".replace("_", "-")
        nb.cells.insert(index, extra)
    for gid, new_source in sample.locked_edits:
        cell = cell_by_id(nb, gid)
        if new_source is None:
            nb.cells.remove(cell)
        else:
            cell.source = new_source
    if sample.kernelspec:
        nb.metadata["kernelspec"] = {"name": sample.kernelspec, "display_name": sample.kernelspec,
                                     "language": sample.kernelspec.split("-")[0]}
    return nb


def write_samples(assignment: str, source_path: Path, release_path: Path, submitted_dir: Path,
                  student_cell: str, kernel_cell: str, samples=None) -> list[Sample]:
    """Write submitted/<sample name>/<assignment>/<notebook> for each sample (default: the usual set)."""
    source_nb, release_nb = read(source_path), read(release_path)
    samples = SAMPLES[assignment] if samples is None else samples
    for sample in samples:
        folder = submitted_dir / sample.name / assignment
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (sample.filename or release_path.name)
        if sample.missing:
            continue
        if sample.raw is not None:
            target.write_text(sample.raw)
            continue
        nbformat.write(build_submission(sample, source_nb, release_nb, student_cell, kernel_cell), str(target))
    return list(samples)


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

PROBLEM3_GPU_FAULTS = (
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
GPU_FAULTS = _SampleSets("GPU_FAULTS", PROBLEM3_GPU_FAULTS)


def sample_kernel_function(assignment: str, sample: Sample, repo_root: Path | None = None):
    """The graded function of a sample whose mistake is in its code (edits, an untouched answer
    cell, an extra cell), imported in this process: for in-process checks and timings."""
    from ..notebook_code import import_source
    from ..problems import get

    module = get(assignment)
    root = Path(repo_root) if repo_root else Path(__file__).resolve().parents[2]
    source = read(root / "solutions" / assignment / module.NOTEBOOK)
    release = read(root / "notebooks" / assignment / module.NOTEBOOK)
    parts = []
    for gid in module.KERNEL_CELLS:
        if gid == module.STUDENT_CELL and sample.untouched:
            parts.append(cell_by_id(release, gid).source)
        elif gid == module.STUDENT_CELL:
            parts.append(apply_edits(strip_markers(cell_by_id(source, gid).source), sample.edits)
                         + sample.answer_suffix)
        else:
            parts.append(strip_markers(cell_by_id(source, gid).source))
    if sample.extra_cell:
        parts.append(sample.extra_cell)
    namespace = import_source("\n\n".join(parts) + "\n", f"{assignment}_sample_{sample.name}")
    return getattr(namespace, module.KERNEL_FUNCTION)
