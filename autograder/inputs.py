"""Seeded Q/K/V makers, including the awkward layouts a real model hands a kernel."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

# How the (B, H, L, D) view sits in memory.
#   contiguous: plain row-major (B, H, L, D)
#   bshd:       allocated as (B, L, H, D) and transposed, as a model's projection output is
#   strided_d:  every other element of a wider last dimension (head-dim stride 2)
LAYOUTS = ("contiguous", "bshd", "strided_d")


@dataclass(frozen=True)
class Case:
    """One test input: shapes, dtype, memory layout and seed."""
    B: int
    H: int
    L: int
    D: int
    dtype: str = "float16"
    layout: str = "contiguous"
    H_kv: int | None = None   # None: same as H
    L_k: int | None = None    # None: same as L
    seed: int = 0

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")

    @property
    def heads_kv(self) -> int:
        return self.H if self.H_kv is None else self.H_kv

    @property
    def len_k(self) -> int:
        return self.L if self.L_k is None else self.L_k

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def with_dtype(self, dtype: str) -> "Case":
        return replace(self, dtype=dtype)

    def label(self) -> str:
        heads = f"H={self.H}" if self.H_kv is None else f"Hq={self.H} Hkv={self.H_kv}"
        lens = f"L={self.L}" if self.L_k is None else f"Lq={self.L} Lk={self.L_k}"
        layout = "" if self.layout == "contiguous" else f" {self.layout}"
        return f"B={self.B} {heads} {lens} D={self.D} {self.dtype}{layout}"


def _tensor(shape, dtype, layout, generator, device):
    b, h, n, d = shape
    if layout == "contiguous":
        base = torch.randn(b, h, n, d, generator=generator)
        return base.to(device=device, dtype=dtype)
    if layout == "bshd":
        base = torch.randn(b, n, h, d, generator=generator)
        return base.to(device=device, dtype=dtype).transpose(1, 2)
    base = torch.randn(b, h, n, 2 * d, generator=generator)
    return base.to(device=device, dtype=dtype)[..., ::2]


def make_qkv(case: Case, device="cpu"):
    """Fresh N(0, 1) Q, K, V for `case`, reproducible from its seed (drawn on the CPU)."""
    gen = torch.Generator().manual_seed(case.seed)
    q = _tensor((case.B, case.H, case.L, case.D), case.torch_dtype, case.layout, gen, device)
    k = _tensor((case.B, case.heads_kv, case.len_k, case.D), case.torch_dtype, case.layout, gen, device)
    v = _tensor((case.B, case.heads_kv, case.len_k, case.D), case.torch_dtype, case.layout, gen, device)
    return q, k, v
