"""Where a NaN or an infinity first appeared in a Triton kernel run by the interpreter.

A NaN in the output says little: it spreads through every later step. Re-running the kernel with
the interpreter's arithmetic watched finds the first operation that made one out of numbers that
were not (-inf - (-inf), 0/0, inf * 0, an exp2 that overflowed), and the kernel's line that asked
for it. Only the interpreter can be watched (TRITON_INTERPRET=1); a GPU run is not re-run here.
"""
from __future__ import annotations

import contextlib
import linecache
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import numpy as np

_SKIP = ("triton", "numpy", "torch")  # the frames of these packages are not the kernel's
_THIS = str(Path(__file__).resolve())


@dataclass(frozen=True)
class Event:
    """One operation that made a non-finite value from operands that had none there."""
    op: str                      # numpy's name of the operation: subtract, divide, exp2, matmul, ...
    kind: str                    # "nan", or "inf" for an overflow or a log of 0
    operands: tuple[float, ...]  # the operands at the first such element
    line: int | None             # the kernel's line
    source: str                  # that line's text

    def where(self) -> str:
        # The line's text, not its number: the kernel's module is assembled from several cells.
        code = self.source.split("#")[0].strip()
        return f"`{code}`" if code else "the kernel"

    def what(self) -> str:
        a = self.operands
        if self.kind == "nan":
            if self.op == "subtract" and len(a) == 2 and np.isinf(a[0]) and a[0] == a[1]:
                return f"{_num(a[0])} - ({_num(a[1])}) is NaN: a row whose scores were all -inf so far " \
                       "(a fully masked block, or m_i before any key) subtracted from itself"
            if self.op == "add" and len(a) == 2 and np.isinf(a[0]) and a[0] == -a[1]:
                return f"{_num(a[0])} + {_num(a[1])} is NaN"
            if self.op == "divide" and len(a) == 2 and a[0] == 0 and a[1] == 0:
                return "0 / 0 is NaN"
            if self.op == "divide" and len(a) == 2 and np.isinf(a[0]) and np.isinf(a[1]):
                return "inf / inf is NaN: an exp2 that overflowed, divided by a sum that overflowed too"
            if self.op == "matmul":
                return ("a dot product with an infinite operand is NaN (inf * 0, or inf - inf, inside its sum)"
                        if any(np.isinf(x) for x in a) else "a dot product made a NaN")
            if self.op in ("multiply", "fma") and any(np.isinf(x) for x in a) and 0 in a:
                return "inf * 0 is NaN: an infinite value (an overflowed exp2, or a -inf score) times 0"
            if self.op in ("log", "log2", "sqrt") and a and a[0] < 0:
                return f"{self.op} of a negative number ({_num(a[0])}) is NaN"
            return f"{self.op} of {', '.join(map(_num, a))} is NaN"
        if self.op.startswith("cast to") and a:
            return f"{_num(a[0])} does not fit in {self.op[8:]}: it became inf in the {self.op} (is p above 1? " \
                   "a probability is at most 1 once the running max is subtracted in the same units as the scores)"
        if self.op == "matmul":
            return "a dot product overflowed to inf"
        if self.op in ("exp", "exp2") and a:
            return f"{self.op}({_num(a[0])}) overflowed to inf: the running max was not subtracted before " \
                   "the exponential, or the scores are in the wrong units"
        if self.op == "divide" and len(a) == 2 and a[1] == 0:
            return f"{_num(a[0])} / 0 is inf: a division by zero"
        if self.op in ("log", "log2") and a and a[0] == 0:
            return f"{self.op}(0) is -inf: the log of a sum that is 0"
        return f"{self.op} of {', '.join(map(_num, a))} overflowed to inf"


def _num(x: float) -> str:
    return "-inf" if x == -np.inf else "inf" if x == np.inf else f"{x:.4g}"


class Trace:
    """The events of one watched run, in order (at most one per kernel line and operation)."""

    def __init__(self, limit: int = 8):
        self.events: list[Event] = []
        self.limit = limit
        self._seen: set = set()

    def record(self, op: str, out, inputs) -> None:
        if len(self.events) >= self.limit:
            return
        out = np.asarray(out)
        if out.dtype.kind not in "fc" or out.size == 0:
            return
        arrays = [np.asarray(x) for x in inputs]
        floats = [x for x in arrays if x.dtype.kind in "fc"]
        try:
            had_nan = np.zeros(out.shape, dtype=bool)
            had_inf = np.zeros(out.shape, dtype=bool)
            for x in floats:
                if x.shape != out.shape and op == "matmul":
                    # A product's entry comes from a whole row and column: any non-finite there counts.
                    x_nan, x_inf = bool(np.isnan(x).any()), bool(np.isinf(x).any())
                    had_nan |= x_nan
                    had_inf |= x_inf
                    continue
                had_nan |= np.broadcast_to(np.isnan(x), out.shape)
                had_inf |= np.broadcast_to(np.isinf(x), out.shape)
        except ValueError:  # shapes this watch does not follow (reductions): not recorded
            return
        new_nan = np.isnan(out) & ~had_nan
        new_inf = np.isinf(out) & ~had_nan & ~had_inf
        for kind, new in (("nan", new_nan), ("inf", new_inf)):
            if not new.any():
                continue
            index = tuple(int(i[0]) for i in np.nonzero(new))
            operands = tuple(float(_at(x, index, out.shape, op)) for x in arrays)
            line, source = _kernel_line()
            key = (op, kind, line)
            if key in self._seen:
                continue
            self._seen.add(key)
            self.events.append(Event(op, kind, operands, line, source))

    def first(self, kind: str | None = None) -> Event | None:
        return next((e for e in self.events if kind is None or e.kind == kind), None)

    def explain(self) -> str | None:
        """One sentence for a student: where the first NaN came from, and the overflow before it."""
        nan = self.first("nan")
        if nan is None:
            inf = self.first("inf")
            return f"the first infinity appeared in {inf.where()}: {inf.what()}" if inf else None
        before = next((e for e in self.events[:self.events.index(nan)] if e.kind == "inf"), None)
        if before is not None and "inf" in nan.what():  # the overflow is the cause, the NaN its consequence
            then = nan.what() + ("" if nan.source == before.source else f", in {nan.where()}")
            return f"the first infinity appeared in {before.where()}: {before.what()}; then {then}"
        return f"the first NaN appeared in {nan.where()}: {nan.what()}"


def _at(x, index, shape, op):
    if op == "matmul":  # an entry of a product comes from a whole row and column: their largest value
        finite = x[np.isfinite(x)] if x.dtype.kind in "fc" else x
        return np.inf if x.dtype.kind in "fc" and np.isinf(x).any() else (np.abs(finite).max() if finite.size else 0)
    return x.reshape(-1)[0] if x.ndim == 0 else np.broadcast_to(x, shape)[index]


def _kernel_line() -> tuple[int | None, str]:
    """The innermost frame that is neither this module nor Triton's, numpy's or torch's: the
    @triton.jit function's line (the interpreter runs its source with the file's line numbers)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if name != _THIS and not any(f"{sep}{pkg}{sep}" in name for pkg in _SKIP for sep in ("/", "\\")):
            return frame.f_lineno, linecache.getline(name, frame.f_lineno).strip()
        frame = frame.f_back
    return None, ""


@contextlib.contextmanager
def watch(limit: int = 8):
    """Within this block, every float operation of the Triton interpreter is watched for new
    non-finite values. Yields the Trace. Nothing is watched outside the interpreter."""
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    trace = Trace(limit)
    originals = {name: getattr(builder, name)
                 for name in ("binary_op", "unary_op", "create_fma", "create_dot", "cast_impl", "create_fp_to_fp")}

    def binary_op(self, lhs, rhs, op):
        out = originals["binary_op"](self, lhs, rhs, op)
        trace.record(getattr(op, "__name__", str(op)), out.data, (lhs.data, rhs.data))
        return out

    def unary_op(self, arg, op):
        out = originals["unary_op"](self, arg, op)
        trace.record(getattr(op, "__name__", str(op)), out.data, (arg.data,))
        return out

    def create_fma(self, x, y, z):
        out = originals["create_fma"](self, x, y, z)
        trace.record("fma", out.data, (x.data, y.data, z.data))
        return out

    def create_dot(self, a, b, d, *args, **kwargs):
        out = originals["create_dot"](self, a, b, d, *args, **kwargs)
        trace.record("matmul", out.data, (a.data, b.data, d.data))
        return out

    def cast_impl(self, src, dst_type, *args):
        out = originals["cast_impl"](self, src, dst_type, *args)
        trace.record(f"cast to {dst_type.scalar}", out.data, (src.data,))
        return out

    def create_fp_to_fp(self, src, dst_type, *args):
        out = originals["create_fp_to_fp"](self, src, dst_type, *args)
        trace.record(f"cast to {dst_type.scalar}", out.data, (src.data,))
        return out

    replacements = {"binary_op": binary_op, "unary_op": unary_op, "create_fma": create_fma, "create_dot": create_dot,
                    "cast_impl": cast_impl, "create_fp_to_fp": create_fp_to_fp}
    try:
        for name, fn in replacements.items():
            setattr(builder, name, fn)
        with np.errstate(all="ignore"):
            yield trace
    finally:
        for name, fn in originals.items():
            setattr(builder, name, fn)
