"""Watch a student call: which PyTorch ops it runs, whether it launches a Triton kernel,
and whether it writes into its inputs.

A kernel exercise is only honest if the answer comes from the student's kernel, not
from `scaled_dot_product_attention` or a plain softmax/matmul in PyTorch.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# aten ops that compute attention (or its pieces) outside a Triton kernel.
FORBIDDEN_OPS = re.compile(
    r"attention|softmax|logsumexp|^(mm|bmm|addmm|baddbmm|matmul|einsum|linear|_?addmm_activation)$"
)


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@dataclass
class Watch:
    ops: set = field(default_factory=set)
    triton_launches: int = 0

    @property
    def forbidden_ops(self) -> list[str]:
        return sorted(op for op in self.ops if FORBIDDEN_OPS.search(op))


@contextmanager
def watch_call():
    """Record aten ops and Triton launches made inside the block."""
    from triton.runtime.jit import KernelInterface

    record = Watch()
    original = KernelInterface.__getitem__

    def counting_getitem(self, grid):
        launcher = original(self, grid)

        def launch(*args, **kwargs):
            record.triton_launches += 1
            return launcher(*args, **kwargs)
        return launch

    KernelInterface.__getitem__ = counting_getitem
    recorder = _OpRecorder()
    try:
        with recorder:
            yield record
    finally:
        KernelInterface.__getitem__ = original
        record.ops = recorder.ops


def snapshot(tensors):
    return [t.detach().clone() for t in tensors]


def mutated(before, after) -> list[int]:
    """Indices of tensors whose bits changed (bitwise, so a NaN written in is caught too)."""
    def bits(t):
        return t.view(torch.int16) if t.element_size() == 2 else t.view(torch.int32)
    return [i for i, (a, b) in enumerate(zip(before, after)) if not torch.equal(bits(a), bits(b))]
