"""Performance points without a GPU: what a kernel asks of a GPU, counted, then priced.

Under the Triton interpreter a kernel's CPU time says little about its GPU time: numpy runs a
float32 `tl.dot` as fast as a float16 one, and the interpreter's own overhead per operation
hides how much arithmetic each operation does. So without a GPU the performance points come
from a count instead of a clock. Two parts, in two processes:

- `counting()` (in the sandboxed candidate, around one call of the kernel): counts what the
  interpreter executes that a GPU would spend time on: tensor-core FLOPs by operand type
  (`tl.dot`), exponentials (`exp`, `exp2`), other special functions (log, sqrt, sin, cos,
  division), floating-point element operations (add, subtract, multiply, fma, min, max), and
  the bytes that loads, stores and atomics move (masked-off lanes move nothing).
  It wraps methods of Triton's interpreter builder, which every `triton.language` operation of
  an interpreted kernel goes through, and hands back plain integers (`Counts.to_dict`).
- `price(counts)` (in the judge, which never runs student code): turns a count into seconds on
  an H200 with the simple model below; `performance.count_against_reference` compares the
  student's price with the reference kernel's on the same inputs and applies the timing bands.

The GPU cost model (an NVIDIA H200 SXM; the rates are peak, dense):

    dot time    = sum over operand types of FLOPs / tensor-core rate of that type
    SFU time    = (exponentials + other special functions) / special-function rate
    ALU time    = floating-point element operations / CUDA-core rate
    memory time = distinct bytes loaded and stored / HBM bandwidth
    cost        = max(dot time + SFU time, ALU time, memory time)

  - tensor-core rates: H200 datasheet (nvidia.com/en-us/data-center/h200), whose figures are
    "with sparsity", halved for dense: FP8 1979, FP16/BF16 989 TFLOPS; FP64 tensor core 67.
  - a dot with float32 operands at the CUDA cores' FP32 rate, 67 TFLOPS (datasheet), whatever
    its input_precision: the datasheet's TF32 tensor-core rate (494.5 dense) is not what such a
    dot gets inside these kernels. On the H200 (docs/results/cost-vs-timing) a float32 p @ v
    made the problem 3 kernel 8.5x slower (TF32, the default) and 115x (input_precision="ieee"):
    slower than even 67 TFLOPS explains, so this rate is a lower bound on what it costs.
  - special functions (ex2, lg2, rcp, rsqrt, sin, cos: the SFU, one result per lane): 16 per
    clock per SM on compute capability 9.0 (CUDA C++ Programming Guide, arithmetic instruction
    throughput), x 132 SMs x 1.83 GHz = 3.9e12/s, the figure the FlashAttention-3 paper gives
    for the H100 SXM5 ("989 TFLOPS of FP16 matmul but only 3.9 TFLOPS of special functions");
    the H200 has the same GH100 chip. `tl.exp` compiles to ex2 of a scaled argument: one SFU op.
  - CUDA cores: 128 FP32 results per clock per SM (same table) x 132 SMs x 1.98 GHz = 33.5e12
    element operations/s (the datasheet's FP32 67 TFLOPS counts an FMA as two).
  - memory: HBM3e 4.8 TB/s (H200 datasheet), charged once per distinct byte a call reads or
    writes (a re-read, such as K and V read again by every query block, comes from L2).
  - why `max` and `+`: a GPU overlaps memory traffic with arithmetic (asynchronous copies in
    stages), and the CUDA cores' element work with the tensor cores' and the SFU's (other
    pipes), so each only costs what it exceeds the rest by. In a FlashAttention-2 kernel the
    exponentials of a tile wait for its QK^T dot and the PV dot waits for them, so tensor cores
    and SFU take turns (overlapping them takes warp specialisation, FA3 §3.1). For the problem 3
    reference on the H200 (D=64, 128x128 tiles) the model gives 8.4 ns per tile (4.2 dot + 4.2
    exp), i.e. 500 TFLOPS: it measures 437-445. Element work decides only in a kernel that
    computes a product without `tl.dot` (a broadcast multiply and a sum: CUDA cores, not
    tensor cores).

Not counted: integer and index arithmetic, selects and comparisons, reductions (tl.sum, tl.max),
launch overhead, and what a GPU compiler would remove (a dot whose result is never used is
counted; on a GPU it may cost nothing). The count is exact and repeatable: the same kernel on the
same inputs always gets the same cost, on any machine.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

# Peak dense rates of an H200 SXM (see the module docstring for the sources), per second.
DOT_RATES = {
    "fp8": 1979e12,     # 8-bit floats (and tl.dot_scaled), int8
    "fp16": 989e12,     # float16, bfloat16
    "fp32": 67e12,      # float32 operands (any input_precision), 32-bit integers: CUDA cores
    "fp64": 67e12,      # float64 tensor cores
}
SFU_RATE = 3.9e12       # special-function results per second
ALU_RATE = 33.5e12      # floating-point element operations per second (CUDA cores)
HBM_BYTES_PER_S = 4.8e12

ALU = ("create_fadd", "create_fsub", "create_fmul", "create_fma", "create_fneg", "create_minimumf", "create_minnumf",
       "create_maximumf", "create_maxnumf")
SFU_OTHER = ("create_log", "create_log2", "create_sqrt", "create_precise_sqrt", "create_rsqrt", "create_sin",
             "create_cos", "create_fdiv", "create_precise_divf")
_MAX_COUNT = 1 << 62


@dataclass
class Counts:
    """What one call asked of a GPU. Plain integers, so they cross to the judge as data."""
    dot_flops: dict = field(default_factory=lambda: dict.fromkeys(DOT_RATES, 0))
    dots: int = 0               # tl.dot calls (all programs)
    exp: int = 0                # exp and exp2 results
    sfu_other: int = 0          # log, log2, sqrt, rsqrt, sin, cos, float division results
    alu: int = 0                # floating-point element operations (add, sub, mul, fma, neg, min, max)
    bytes_loaded: int = 0       # every load (re-reads included) ...
    bytes_stored: int = 0       # ... and store
    memory_bytes: int = 0       # distinct bytes read or written: the traffic to and from HBM
    programs: int = 0           # programs run (all launches)

    def to_dict(self) -> dict:
        return {"dot_flops": dict(self.dot_flops), "dots": self.dots, "exp": self.exp, "sfu_other": self.sfu_other,
                "alu": self.alu, "bytes_loaded": self.bytes_loaded, "bytes_stored": self.bytes_stored,
                "memory_bytes": self.memory_bytes, "programs": self.programs}

    @classmethod
    def from_dict(cls, raw) -> Counts:
        """A count sent by a candidate, checked field by field: ValueError if it is not one."""
        def number(value, what):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_COUNT:
                raise ValueError(f"{what} is not a count")
            return value

        if not isinstance(raw, dict) or set(raw) != set(cls().to_dict()):
            raise ValueError("not a count record")
        flops = raw["dot_flops"]
        if not isinstance(flops, dict) or set(flops) != set(DOT_RATES):
            raise ValueError("dot_flops is not a count per operand type")
        return cls({k: number(v, f"dot_flops[{k}]") for k, v in flops.items()},
                   *(number(raw[k], k) for k in ("dots", "exp", "sfu_other", "alu", "bytes_loaded", "bytes_stored",
                                                 "memory_bytes", "programs")))


@dataclass(frozen=True)
class Price:
    """A count priced on an H200 (module docstring): seconds per part, and the cost."""
    dot_s: float
    sfu_s: float
    alu_s: float
    memory_s: float

    @property
    def seconds(self) -> float:
        return max(self.dot_s + self.sfu_s, self.alu_s, self.memory_s)

    def describe(self) -> str:
        us = 1e6
        return (f"{self.seconds * us:.3f} us (dots {self.dot_s * us:.3f} + special functions {self.sfu_s * us:.3f}; "
                f"element operations {self.alu_s * us:.3f}; memory {self.memory_s * us:.3f})")


def price(counts: Counts) -> Price:
    dot_s = sum(flops / DOT_RATES[kind] for kind, flops in counts.dot_flops.items())
    return Price(dot_s, (counts.exp + counts.sfu_other) / SFU_RATE, counts.alu / ALU_RATE,
                 counts.memory_bytes / HBM_BYTES_PER_S)


# ------------------------------------------------------------------------------------------------
# Counting, in the process that runs the kernel under TRITON_INTERPRET=1.

def _dot_kind(a, b) -> str:
    """The rate class of a tl.dot with operands a and b (the wider operand decides)."""
    widest = max(a.dtype.primitive_bitwidth, b.dtype.primitive_bitwidth)
    return "fp8" if widest <= 8 else "fp16" if widest == 16 else "fp64" if widest == 64 else "fp32"


def _itemsize(handle) -> int:
    return max(1, handle.get_element_ty().primitive_bitwidth // 8)


class _Addresses:
    """The addresses a call touched, per element size, to count each byte once."""

    def __init__(self):
        self.seen: dict[int, list] = {}

    def add(self, ptrs, mask) -> int:
        """Record the active lanes of one access; returns the bytes it moves."""
        import numpy as np

        active = ptrs.data[np.broadcast_to(mask.data, ptrs.data.shape)]
        size = _itemsize(ptrs)
        self.seen.setdefault(size, []).append(active.astype(np.uint64, copy=False).ravel())
        return int(active.size) * size

    def distinct_bytes(self) -> int:
        import numpy as np

        return sum(size * int(np.unique(np.concatenate(parts)).size) for size, parts in self.seen.items())


@dataclass(frozen=True)
class _Everywhere:
    data: object   # a mask whose lanes are all active


_counting_now: list = []


@contextlib.contextmanager
def counting():
    """Count what interpreted kernels ask of a GPU inside the block; yields the Counts, filled
    as kernels run. Needs TRITON_INTERPRET=1 (set before the kernels were defined)."""
    from triton.runtime import interpreter

    if _counting_now:
        raise RuntimeError("counting() does not nest")
    builder = interpreter.interpreter_builder
    counts, addresses = Counts(), _Addresses()

    def dot(original, a, b, *rest):
        outputs = math.prod(a.data.shape[:-1]) * b.data.shape[-1]  # (..., M, K) @ (..., K, N)
        counts.dot_flops[_dot_kind(a, b)] += 2 * a.data.shape[-1] * outputs
        counts.dots += 1
        return original(a, b, *rest)

    def dot_scaled(original, lhs, lhs_scale, lhs_format, rhs, rhs_scale, rhs_format, *rest):
        result = original(lhs, lhs_scale, lhs_format, rhs, rhs_scale, rhs_format, *rest)
        # Scaled operands are 8 bits or narrower: the FP8 rate (an inner dimension packed two to a
        # byte counts at its packed length).
        counts.dot_flops["fp8"] += 2 * int(result.data.size) * int(lhs.data.shape[-1])
        counts.dots += 1
        return result

    def exp(original, arg):
        counts.exp += int(arg.data.size)
        return original(arg)

    def sfu(original, *args):
        counts.sfu_other += int(args[0].data.size)
        return original(*args)

    def alu(original, *args):
        result = original(*args)
        counts.alu += int(result.data.size)
        return result

    def load(original, ptrs, mask, *rest):
        counts.bytes_loaded += addresses.add(ptrs, mask)
        return original(ptrs, mask, *rest)

    def store(original, ptrs, value, mask, *rest):
        counts.bytes_stored += addresses.add(ptrs, mask)
        return original(ptrs, value, mask, *rest)

    def atomic_rmw(original, op, ptr, val, mask, *rest):
        moved = addresses.add(ptr, mask)
        counts.bytes_loaded += moved
        counts.bytes_stored += moved
        return original(op, ptr, val, mask, *rest)

    def atomic_cas(original, ptr, *rest):
        import numpy as np

        moved = addresses.add(ptr, _Everywhere(np.ones(ptr.data.shape, dtype=bool)))
        counts.bytes_loaded += moved
        counts.bytes_stored += moved
        return original(ptr, *rest)

    def program(original, *grid_idx):
        counts.programs += 1
        return original(*grid_idx)

    wrappers = {"create_dot": dot, "create_dot_scaled": dot_scaled, "create_exp": exp, "create_exp2": exp,
                "create_masked_load": load, "create_masked_store": store, "create_atomic_rmw": atomic_rmw,
                "create_atomic_cas": atomic_cas, "set_grid_idx": program}
    wrappers.update(dict.fromkeys(SFU_OTHER, sfu))
    wrappers.update(dict.fromkeys(ALU, alu))
    for name, wrapper in wrappers.items():
        original = getattr(type(builder), name).__get__(builder)
        # An attribute of the instance shadows the class's method for exactly this builder.
        setattr(builder, name, lambda *args, _w=wrapper, _o=original: _w(_o, *args))
    _counting_now.append(counts)
    try:
        yield counts
    finally:
        _counting_now.pop()
        for name in wrappers:
            builder.__dict__.pop(name, None)
    counts.memory_bytes = addresses.distinct_bytes()
