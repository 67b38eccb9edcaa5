"""Tensor descriptors for the course's kernels: tile loads by the tensor memory accelerator (TMA).

Hopper-class GPUs (compute capability 9.0 and newer) can fetch a whole tile with one instruction
from a descriptor that knows the tensor's shape and strides; rows past the end of the tensor
arrive as zeros and stores past it are dropped. The kernels of problems 3, 4 and 6 have a
pointer version (every GPU, and the CPU interpreter) and a descriptor version (Hopper); the
wrappers pick one with `tma_ready`.
"""
from __future__ import annotations

import torch

try:  # triton >= 3.4
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:
    TensorDescriptor = None


def is_hopper_or_newer(t: torch.Tensor) -> bool:
    """True for a tensor on a GPU of compute capability 9.0 or newer (H100, H200, B200...)."""
    return t.is_cuda and torch.cuda.get_device_capability(t.device)[0] >= 9


def tma_ready(*tensors: torch.Tensor) -> bool:
    """Descriptors need Hopper or newer, a unit stride along D and 16-byte aligned strides."""
    if TensorDescriptor is None or not is_hopper_or_newer(tensors[0]):
        return False
    return all(t.stride(-1) == 1 and t.data_ptr() % 16 == 0
               and all(s * t.element_size() % 16 == 0 for s in t.stride()[:-1]) for t in tensors)


def tile_descriptor(t: torch.Tensor, rows: int):
    """A descriptor of a (B, H, L, D) tensor whose tiles are `rows` positions of one (batch, head)."""
    return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, rows, t.shape[-1]])
