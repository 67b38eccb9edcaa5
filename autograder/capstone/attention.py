"""The two attention functions the capstone trains with, both causal, both (B, H, L, D) -> (B, H, L, D).

* "sdpa": PyTorch's `scaled_dot_product_attention(is_causal=True)`; on a GPU with its
  FlashAttention-2 backend pinned (the default backend changes with the torch version);
  "sdpa-math", the same with PyTorch's unfused math backend (a control: see _SDPA).
* "course": problem 7's `flash_attention(q, k, v, causal=True)`, the course's causal forward kernel
  and the backward kernels around your five functions, joined in a `torch.autograd.Function`.

The course's kernels come from one of two places: the learner's own solved problem 7 notebook
(`learner_kernels`), or, in the course repository, the reference solution (`reference_kernels`).
Nothing here holds kernel code of its own.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

from torch.nn import functional as F

from .model import Attention

BACKENDS = ("course", "sdpa", "sdpa-math")
PROBLEM = "problem7"


class KernelsNotReady(RuntimeError):
    """Problem 7's kernels cannot be used yet: not solved, failing its self-check, or not found."""


# SDPA backends by name: on a GPU "sdpa" pins FlashAttention-2 (the default backend changes with
# the torch version); "sdpa-math" is PyTorch's unfused reference, a second, equally valid summation
# order, whose distance from "sdpa" shows how far two correct attentions drift apart in training.
_SDPA = {"sdpa": "FLASH_ATTENTION", "sdpa-math": "MATH"}


def sdpa_attention(name: str = "sdpa") -> Attention:
    """PyTorch's causal attention: "sdpa" (FlashAttention-2 on a GPU, PyTorch's choice on the CPU)
    or "sdpa-math" (the math backend everywhere)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if name not in _SDPA:
        raise ValueError(f"unknown SDPA backend {name!r}; known: {', '.join(_SDPA)}")
    backend = getattr(SDPBackend, _SDPA[name])

    def attention(q, k, v):
        if q.is_cuda or backend == SDPBackend.MATH:
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    return attention


def course_attention(kernels) -> Attention:
    """Causal attention through problem 7's `flash_attention` (forward and backward kernels)."""
    flash_attention = getattr(kernels, "flash_attention", None)
    if flash_attention is None:
        raise KernelsNotReady(f"{getattr(kernels, '__name__', kernels)!r} has no flash_attention: "
                              f"pass the module of problem 7's kernels")

    def attention(q, k, v):
        return flash_attention(q, k, v, True)

    return attention


def reference_kernels():
    """Problem 7's reference kernels, from the course repository's source notebook."""
    from .. import problems

    if not problems.source_notebook_path(PROBLEM).exists():
        raise KernelsNotReady("the reference solution is not here (it stays in the course repository): "
                              "use learner_kernels(<your solved problem7.ipynb>)")
    return problems.reference_module(PROBLEM)


def _is_untouched(cell_source: str) -> bool:
    return "raise NotImplementedError" in cell_source


def learner_kernels(notebook: Path | str, self_check: bool = True):
    """Problem 7's kernels with the five functions of the learner's notebook at `notebook` (its
    *Your code* cell, saved), checked first with problem 7's self-check unless `self_check` is False."""
    from ..kernel_module import import_kernel_module
    from ..notebook_code import cell_by_id, read
    from ..problems import get

    notebook = Path(notebook)
    if not notebook.is_file():
        raise KernelsNotReady(f"no notebook at {notebook.resolve()}: give the path of your problem 7 notebook "
                              f"(in Colab, upload it to the files panel first)")
    problem = get(PROBLEM)
    nb = read(notebook)
    try:
        answer = cell_by_id(nb, problem.SPEC.student_cell).source
    except KeyError:
        raise KernelsNotReady(f"{notebook} is not problem 7's notebook: it has no *Your code* cell "
                              f"({problem.SPEC.student_cell!r})") from None
    if _is_untouched(answer):
        raise KernelsNotReady(f"{notebook}: the *Your code* cell still raises NotImplementedError. Solve "
                              f"problem 7 and save the notebook, then run this again")
    kernels = import_kernel_module(problem.SPEC, nb, name="capstone")
    if self_check:
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                problem.check(kernels.flash_attention_grads)
        except Exception as failed:  # a wrong gradient, or a kernel that does not even compile
            raise KernelsNotReady(f"your problem 7 kernels fail its self-check, so training with them would "
                                  f"teach nothing: fix them first.\n{printed.getvalue()}{failed}") from failed
    return kernels


def course_kernels(notebook: Path | str | None = None, self_check: bool = True):
    """The learner's kernels from `notebook` when it is solved; otherwise, in the course repository,
    the reference solution's (said aloud). Returns (kernels, where they came from)."""
    if notebook is not None:
        try:
            return learner_kernels(notebook, self_check), f"your problem 7 notebook ({notebook})"
        except KernelsNotReady as not_ready:
            try:
                return reference_kernels(), f"the course's reference solution, because {not_ready}"
            except KernelsNotReady:
                raise not_ready from None
    return reference_kernels(), "the course's reference solution"


def attention_backend(name: str, kernels=None) -> Attention:
    """The attention function called `name` (BACKENDS); "course" needs `kernels` (course_kernels)."""
    if name in _SDPA:
        return sdpa_attention(name)
    if name == "course":
        if kernels is None:
            raise ValueError("the course backend needs problem 7's kernels: course_kernels(...)")
        return course_attention(kernels)
    raise ValueError(f"unknown attention backend {name!r}; known: {', '.join(BACKENDS)}")
