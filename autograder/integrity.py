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
from torch.overrides import TorchFunctionMode

from .dispatch_mode import WatchingMode

# aten ops that compute attention (or its pieces) outside a Triton kernel.
FORBIDDEN_OPS = re.compile(
    r"attention|softmax|logsumexp|^(mm|bmm|addmm|baddbmm|matmul|einsum|linear|_?addmm_activation)$"
)


ATTENTION_OPS = re.compile(r"attention")


def _storage(t):
    try:
        return t.untyped_storage().data_ptr()
    except Exception:  # tensors without storage (meta, sparse)
        return None


def _tensors_in(values):
    """The tensors among op arguments, including those inside lists (torch.cat, torch.stack)."""
    for a in values:
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from (t for t in a if isinstance(t, torch.Tensor))


class _OpRecorder(WatchingMode):
    """Records each aten op's name, the largest tensor any op produced, and every op that
    made a copy of a watched input bigger than the input itself (K/V repeated for GQA)."""

    def __init__(self, inputs=()):
        super().__init__()
        self.ops: set[str] = set()
        self.largest_numel = 0
        self.inputs = [(i, _storage(t), t.numel()) for i, t in enumerate(inputs)]
        self.enlarged_copies: list[tuple[str, int]] = []   # (op, index of the watched input)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.ops.add(name)
        out = func(*args, **(kwargs or {}))
        results = [t for t in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(t, torch.Tensor)]
        for t in results:
            self.largest_numel = max(self.largest_numel, t.numel())
        if self.inputs and results:
            read = {_storage(a) for a in _tensors_in(list(args) + list((kwargs or {}).values()))}
            for index, storage, numel in self.inputs:
                if storage in read and any(t.numel() > numel and _storage(t) != storage for t in results):
                    self.enlarged_copies.append((name, index))
        return out


class _FunctionRecorder(TorchFunctionMode):
    """Records the torch functions called, before they decompose: whether a composite such as
    scaled_dot_product_attention reaches the dispatcher as one op depends on the torch version."""

    def __init__(self):
        super().__init__()
        self.functions: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.functions.add(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


FORBIDDEN_FUNCTIONS = re.compile(r"attention|softmax|logsumexp")


@dataclass
class Watch:
    ops: set = field(default_factory=set)
    triton_launches: int = 0
    largest_numel: int = 0             # elements of the largest tensor an aten op produced
    enlarged_copies: list = field(default_factory=list)  # (op, input index): input copied into more memory
    functions: set = field(default_factory=set)           # torch functions called (before decomposition)
    # What calls into a sandboxed candidate reported (record_remote_watch), merged in at the end.
    remote_ops: set = field(default_factory=set)
    remote_functions: set = field(default_factory=set)
    remote_largest: int = 0
    remote_copies: list = field(default_factory=list)

    @property
    def forbidden_ops(self) -> list[str]:
        return sorted({op for op in self.ops if FORBIDDEN_OPS.search(op)}
                      | {f for f in self.functions if FORBIDDEN_FUNCTIONS.search(f)})

    @property
    def attention_ops(self) -> list[str]:
        return sorted({op for op in self.ops | self.functions if ATTENTION_OPS.search(op)})


_ACTIVE: list = []   # the records of the watch_call blocks now open (innermost last)


def record_remote_watch(remote: dict) -> None:
    """Add what a call in a sandboxed candidate did (reported there by its own watch_call) to
    every watch open here: the judge's proxies call this, so checks read remote calls as local."""
    for record in _ACTIVE:
        record.remote_ops |= set(remote["ops"])
        record.remote_functions |= set(remote["functions"])
        record.triton_launches += remote["triton_launches"]
        record.remote_largest = max(record.remote_largest, remote["largest_numel"])
        record.remote_copies += [tuple(c) for c in remote["enlarged_copies"]]


@contextmanager
def watch_call(inputs=()):
    """Record aten ops and Triton launches made inside the block; `inputs` are the tensors
    whose enlarged copies (e.g. K/V repeated per query head) should be noticed."""
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
    recorder = _OpRecorder(inputs)
    functions = _FunctionRecorder()
    _ACTIVE.append(record)
    try:
        with functions, recorder:
            yield record
    finally:
        _ACTIVE.remove(record)
        KernelInterface.__getitem__ = original
        record.ops = recorder.ops | record.remote_ops
        record.functions = functions.functions | record.remote_functions
        record.largest_numel = max(recorder.largest_numel, record.remote_largest)
        record.enlarged_copies = recorder.enlarged_copies + record.remote_copies


def snapshot(tensors):
    return [t.detach().clone() for t in tensors]


def mutated(before, after) -> list[int]:
    """Indices of tensors whose bits changed (bitwise, so a NaN written in is caught too)."""
    def bits(t):
        return t.view(torch.int16) if t.element_size() == 2 else t.view(torch.int32)
    return [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if not torch.equal(bits(a), bits(b))]
