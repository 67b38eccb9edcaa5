"""Input validation for the kernel wrappers: a clear ValueError instead of a Triton traceback."""
from __future__ import annotations

import os

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16)
HEAD_DIMS = (16, 32, 64, 128)


def check_attention_inputs(q, k, v, allow_gqa: bool = False, dtypes=SUPPORTED_DTYPES) -> None:
    """Raise ValueError naming the first problem with (B, H, L, D) tensors q, k, v (of one of `dtypes`)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have 4 dimensions (B, H, L, D), got shape {tuple(t.shape)}")
        if t.dtype not in dtypes:
            raise ValueError(f"{name} has dtype {t.dtype}; the kernel takes " + " or ".join(map(str, dtypes)))
        if t.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    if q.device.type != "cuda" and not interpreting:
        raise ValueError(f"tensors are on {q.device}; move them to the GPU (or run with TRITON_INTERPRET=1)")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    b, hq, _, d = q.shape
    if k.shape[0] != b:
        raise ValueError(f"q has batch {b} but k/v have batch {k.shape[0]}")
    if k.shape[3] != d:
        raise ValueError(f"q has head dim {d} but k/v have head dim {k.shape[3]}")
    if d not in HEAD_DIMS:
        raise ValueError(f"head dim D={d} is not supported; use one of {HEAD_DIMS}")
    hkv = k.shape[1]
    if allow_gqa:
        if hq % hkv:
            raise ValueError(f"query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    elif hkv != hq:
        raise ValueError(f"q has {hq} heads but k/v have {hkv}; this kernel needs equal head counts")


SOFTMAX_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_softmax_inputs(x, block_size) -> None:
    """Raise ValueError naming the first problem with a (rows, n_cols) softmax input and block size."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty 2-D tensor (rows, n_cols), got shape {tuple(x.shape)}")
    if x.dtype not in SOFTMAX_DTYPES:
        raise ValueError(f"x has dtype {x.dtype}; the kernel takes torch.float16, torch.bfloat16 or torch.float32")
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"x is on {x.device}; move it to the GPU (or run with TRITON_INTERPRET=1)")
    if not isinstance(block_size, int) or block_size < 1 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two (tl.arange needs one), got {block_size!r}")
