"""Peak memory of one call: torch.cuda's counters on a GPU, a tensor-bytes tracker on the CPU.

On a GPU, `torch.cuda.max_memory_allocated` is the answer. On the CPU, PyTorch keeps no such
counter, and Python's `tracemalloc` does not help: tensor storage comes from PyTorch's C++
allocator, not from Python's, so tracemalloc sees a few dozen bytes for a 40 MB tensor.
`PeakTensorMemory` counts instead what the call itself allocates: every aten op runs through
a `TorchDispatchMode`, each new storage an op returns is added to a running total, and a weakref
finalizer takes it off again when the last tensor that uses it is freed. The peak of that total
is the CPU counterpart of `max_memory_allocated() - memory_allocated()` before the call
(without the CUDA allocator's rounding to 512-byte blocks).
"""
from __future__ import annotations

import weakref

import torch

from .dispatch_mode import WatchingMode


def _storage_key(t: torch.Tensor):
    try:
        storage = t.untyped_storage()
    except Exception:  # tensors without storage (meta, sparse): nothing to count
        return None, 0
    return storage.data_ptr(), storage.nbytes()


class PeakTensorMemory(WatchingMode):
    """Live and peak bytes of the tensor storage allocated inside the `with` block.

    Storage that existed before (the inputs) is not counted, nor are views and in-place results
    that share an argument's storage. A storage stays counted while any tensor an op returned
    with it is alive, so a view keeps its base's bytes on the books, as it keeps the memory.

        with PeakTensorMemory() as mem:
            o = fn(q, k, v)
        mem.peak_bytes, mem.live_bytes
    """

    def __init__(self):
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self.allocations = 0
        self._refs: dict[int, int] = {}    # storage pointer -> live tensors returned with it
        self._sizes: dict[int, int] = {}   # storage pointer -> bytes counted for it

    def _release(self, key):
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.live_bytes -= self._sizes.pop(key)

    def _track(self, t: torch.Tensor, arg_keys):
        key, nbytes = _storage_key(t)
        if key is None or key == 0:
            return
        if key in self._refs:              # another tensor on a storage already counted
            self._refs[key] += 1
        elif key in arg_keys:              # a view of, or an in-place write into, older storage
            return
        else:                               # a new allocation
            self._refs[key] = 1
            self._sizes[key] = nbytes
            self.live_bytes += nbytes
            self.allocations += 1
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        weakref.finalize(t, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat_args = torch.utils._pytree.tree_leaves((args, kwargs))
        arg_keys = {_storage_key(a)[0] for a in flat_args if isinstance(a, torch.Tensor)}
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t, arg_keys)
        return out


def peak_call_bytes(fn, *args, **kwargs) -> tuple[int, object]:
    """(peak extra bytes while fn(*args, **kwargs) ran, its result).

    On a CUDA device: max_memory_allocated above what was allocated before the call.
    Elsewhere: the peak of the bytes of tensors the call allocated (PeakTensorMemory).
    """
    tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
    if tensors and tensors[0].is_cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = fn(*args, **kwargs)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base, result
    with torch.no_grad(), PeakTensorMemory() as mem:
        result = fn(*args, **kwargs)
    return mem.peak_bytes, result
