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


def check_choice(field: str, value, choices) -> None:
    """Raise ValueError naming `field` unless `value` is one of `choices` (an input case's dtype or layout)."""
    if value not in choices:
        shown = sorted(choices) if isinstance(choices, dict) else choices
        raise ValueError(f"{field} must be one of {shown}, got {value!r}")


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
    # Which attention the reference computes (the seed's create_mask_bool rules):
    causal: bool = False          # key j visible to query i only if j <= i
    window: int | None = None     # sliding window: i - (window - 1) <= j <= i (implies causal)
    sink: int | None = None       # attention sinks: j < sink and j <= i (implies causal)
    logit_scale: float = 1.0      # Q is multiplied by this: large logits break a naive exp
    grad_layout: str | None = None  # backward problems: the upstream gradient dO's layout (None: `layout`)

    def __post_init__(self):
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("layout", self.layout, LAYOUTS)
        if self.grad_layout is not None:
            check_choice("grad_layout", self.grad_layout, LAYOUTS)
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.sink is not None and self.sink < 0:
            raise ValueError(f"sink must be >= 0, got {self.sink}")
        if self.is_causal and self.len_k != self.L:
            raise ValueError("causal, window and sink cases need as many keys as queries")

    @property
    def is_causal(self) -> bool:
        return self.causal or self.window is not None or self.sink is not None

    @property
    def mask_kwargs(self) -> dict:
        """What the reference needs: dict(is_causal=..., window_size=..., sink_size=...)."""
        return {"is_causal": self.is_causal, "window_size": self.window, "sink_size": self.sink}

    @property
    def call_kwargs(self) -> dict:
        """Extra keyword arguments for the function under test: window_size/sink_size when set."""
        if self.window is None and self.sink is None:
            return {}
        return {"window_size": self.L if self.window is None else self.window, "sink_size": self.sink or 0}

    @property
    def heads_kv(self) -> int:
        return self.H if self.H_kv is None else self.H_kv

    @property
    def len_k(self) -> int:
        return self.L if self.L_k is None else self.L_k

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def with_dtype(self, dtype: str) -> Case:
        return replace(self, dtype=dtype)

    def label(self) -> str:
        heads = f"H={self.H}" if self.H_kv is None else f"Hq={self.H} Hkv={self.H_kv}"
        lens = f"L={self.L}" if self.L_k is None else f"Lq={self.L} Lk={self.L_k}"
        layout = "" if self.layout == "contiguous" else f" {self.layout}"
        mask = ""
        if self.window is not None or self.sink is not None:
            mask = f" W={self.window if self.window is not None else 'L'} S={self.sink or 0}"
        elif self.causal:
            mask = " causal"
        scale = "" if self.logit_scale == 1.0 else f" logits x{self.logit_scale:g}"
        grad = "" if self.grad_layout in (None, self.layout) else f" dO {self.grad_layout}"
        return f"B={self.B} {heads} {lens} D={self.D} {self.dtype}{layout}{grad}{mask}{scale}"


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
    if case.logit_scale != 1.0:
        q.mul_(case.logit_scale)
    k = _tensor((case.B, case.heads_kv, case.len_k, case.D), case.torch_dtype, case.layout, gen, device)
    v = _tensor((case.B, case.heads_kv, case.len_k, case.D), case.torch_dtype, case.layout, gen, device)
    return q, k, v


def make_grad(case: Case, device="cpu"):
    """A fresh N(0, 1) upstream gradient dO shaped like the output (B, H, L, D), in the case's
    `grad_layout` (else its layout), reproducible from its seed and independent of Q, K, V."""
    gen = torch.Generator().manual_seed(case.seed + 104729)
    return _tensor((case.B, case.H, case.L, case.D), case.torch_dtype, case.grad_layout or case.layout, gen, device)
