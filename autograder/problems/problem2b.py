"""Problem 2b: a first Triton kernel, the row-wise online softmax of problem 2.

The student writes the body of `softmax_kernel`: one program per row walks the columns in blocks
with a running max and sum (a masked load whose padding lanes read -inf), then reads the row again
and writes exp(x - m) / l. The launch, the grid and the column offsets are given.

The graded cells call `check_softmax_kernel` with `RowsCase`s: logits in float16, bfloat16 or
float32, rows of any length (one column, a partial last block, a block longer than the row),
rows whose memory is not contiguous, the seed's causal, window and sink masks, a row that is -inf
everywhere, and logits of 1e4. Each output is compared with torch.softmax in float64 of the same
inputs; a wrong one is re-enacted mistake by mistake to name the likely cause.

Tolerances (|out - ref| <= atol + rtol |ref|). The kernel computes in float32 and rounds each
probability once to the output dtype, so the output dtype's rounding dominates: half a unit in
the last place, 2**-12 relative in float16 and 2**-9 in bfloat16. We allow about two units
(rtol 1e-3 and 8e-3). Float32 outputs carry the float32 errors of exp (a few units, plus
|x - m| * 2**-24 from rounding the argument) and of a sum of N terms in blocks (about
(log2(block) + N / block) * 2**-24): rtol 1e-5 holds rows of thousands of columns, as in problem
2. atol 1e-6 (1e-5 for 16-bit outputs) covers probabilities too small to have a relative error
(float16 subnormals). The mistakes named below are off by 1e-2 or more.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import performance
from ..checks import DEFAULT_TIMEOUT_S, Tolerance, conclude, guarded_call, run_each, unless_unrecorded
from ..diagnose import Finding
from ..feedback_run import FIGURE, SELF_CHECK
from ..inputs import DTYPES, check_choice
from ..performance import TimingPlan
from ..references import create_mask_bool
from ..verdict import CaseVerdict
from . import reference_function
from .problem2 import _matches, _overflow_finding, diagnose_softmax
from .spec import ProblemSpec

_HINTS = (
    "Start with pass 1. Inside the loop, `offs` are this block's column numbers; the block's pointers are "
    "x_row + offs * stride_xn. Columns at or past n_cols do not exist: load them with a mask, and ask "
    "yourself what value a missing column must have so that it changes neither the max nor the sum.",
    "Per block (all in float32): m_new = max(m_i, the block's max); alpha = exp(m_i - m_new) re-bases the "
    "old sum; l_i = l_i * alpha + the block's sum of exp(x - m_new). While m_new is still -inf (a row "
    "whose blocks so far were all masked), subtract 0 instead, as in problem 2. Pass 2 starts only once "
    "pass 1 is over: only then are m_i and l_i the row's max and sum.",
    "Pass 1: load the block with mask=offs < n_cols and other=-inf, cast it to float32, take the new max, "
    "rescale l_i by alpha and add the block's sum of exp(x - m_safe), keep the new max. Pass 2: loop over "
    "the same blocks, load them again (the same mask), compute exp(x - m) / l_i with the final m (0 where "
    "it is -inf) and store it, cast to Y's element type, with the same mask.",
)

# ---------------------------------------------------------------------------------------------
# The inputs
# ---------------------------------------------------------------------------------------------

KERNEL_DTYPES = DTYPES  # the attention kernels' dtypes (autograder.inputs)
# How a (rows, cols) view sits in memory:
#   contiguous: row-major, row stride = cols
#   padded:     every row followed by unused memory (row stride cols + 24), as a slice x[:, :cols] is
#   transposed: column-major (the column stride is the number of rows), as x.T of a row-major matrix
LAYOUTS = ("contiguous", "padded", "transposed")
TOLERANCES = {
    torch.float16: Tolerance(atol=1e-5, rtol=1e-3),
    torch.bfloat16: Tolerance(atol=1e-5, rtol=8e-3),
    torch.float32: Tolerance(atol=1e-6, rtol=1e-5),
}


@dataclass(frozen=True)
class RowsCase:
    """One input for the softmax kernel: a (rows, cols) matrix of logits, read in blocks.

    The masks are the seed's (create_mask_bool): the rows are queries spread over a sequence of
    `cols` keys (the first query, the last one and those between), -inf where a query may not look.
    """
    rows: int
    cols: int
    block_size: int | None = 64   # None: the wrapper's own choice (timing, benchmark)
    dtype: str = "float32"
    layout: str = "contiguous"
    logit_scale: float = 1.0      # N(0, 1) logits times this: 1e4 overflows a naive exp
    causal: bool = False          # key j visible to query i only if j <= i
    window: int | None = None     # sliding window i - (window - 1) <= j <= i (causal)
    sink: int | None = None       # and the first `sink` keys (j <= i)
    masked_row: bool = False      # the last row -inf everywhere: no softmax, NaN by convention
    seed: int = 0

    def __post_init__(self):
        check_choice("dtype", self.dtype, KERNEL_DTYPES)
        check_choice("layout", self.layout, LAYOUTS)
        if self.block_size is not None and (self.block_size < 1 or self.block_size & (self.block_size - 1)):
            raise ValueError(f"block_size must be a power of two, got {self.block_size}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return KERNEL_DTYPES[self.dtype]

    @property
    def masked(self) -> bool:
        return self.causal or self.window is not None or self.sink is not None

    @property
    def call_kwargs(self) -> dict:
        return {} if self.block_size is None else {"block_size": self.block_size}

    def label(self) -> str:
        block = "" if self.block_size is None else f" block={self.block_size}"
        layout = "" if self.layout == "contiguous" else f" {self.layout}"
        mask = ""
        if self.window is not None or self.sink is not None:
            mask = f" W={self.window if self.window is not None else self.cols} S={self.sink or 0}"
        elif self.causal:
            mask = " causal"
        scale = "" if self.logit_scale == 1.0 else f" logits x{self.logit_scale:g}"
        row = " -inf row" if self.masked_row else ""
        return f"{self.rows}x{self.cols}{block} {self.dtype}{layout}{mask}{scale}{row}"


def query_rows(rows: int, cols: int) -> torch.Tensor:
    """The queries a masked case's rows stand for: spread from the first to the last of `cols`."""
    return torch.linspace(0, cols - 1, rows).round().long()


def make_logits(case: RowsCase, device="cpu") -> torch.Tensor:
    """Seeded N(0, 1) * logit_scale logits in the case's dtype, layout and masks."""
    gen = torch.Generator().manual_seed(case.seed)
    x = torch.randn(case.rows, case.cols, generator=gen, dtype=torch.float64) * case.logit_scale
    if case.masked:
        window = case.window if case.window is not None else case.cols
        visible = create_mask_bool(case.cols, window, case.sink or 0)[query_rows(case.rows, case.cols)]
        x = x.masked_fill(~visible, -math.inf)
    if case.masked_row:
        x[-1] = -math.inf
    x = x.to(case.torch_dtype)
    if case.layout == "padded":
        buffer = torch.randn(case.rows, case.cols + 24, generator=gen).to(case.torch_dtype)
        buffer[:, :case.cols] = x
        x = buffer[:, :case.cols]
    elif case.layout == "transposed":
        x = x.t().contiguous().t()
    return x.to(device)


def softmax_reference(x: torch.Tensor) -> torch.Tensor:
    """torch.softmax in float64 of the same inputs: a row that is -inf everywhere is NaN (0/0)."""
    return torch.softmax(x.detach().double().cpu(), dim=-1)


# ---------------------------------------------------------------------------------------------
# The typical mistakes, re-enacted in float64
# ---------------------------------------------------------------------------------------------

def after_row(x: torch.Tensor, lanes: int) -> torch.Tensor:
    """What an unmasked load reads in the `lanes` columns past the end of each row: the memory
    that follows the row in x's storage, NaN where that memory is not x's (past its last element)."""
    rows, cols = x.shape
    s_row, s_col = x.stride()
    span = 1 + (rows - 1) * s_row + (cols - 1) * s_col
    flat = torch.as_strided(x.detach(), (span,), (1,), x.storage_offset()).double().cpu()
    offsets = torch.arange(rows)[:, None] * s_row + (cols + torch.arange(lanes))[None, :] * s_col
    inside = offsets < span
    out = torch.full((rows, lanes), math.nan, dtype=torch.float64)
    out[inside] = flat[offsets[inside]]
    return out


def reenact(x: torch.Tensor, block: int, fault: str = "", tail=None) -> torch.Tensor:
    """The kernel's two passes over blocks of `block` columns in float64, with one mistake.

    fault: "" (none), "one_pass" (each block written with the running max and sum of the moment),
    "no_l_rescale", "no_safe_max". `tail`: what the lanes past the last column hold (None: -inf,
    as a correct masked load gives; 0.0 for a load without other=-inf; a (rows, lanes) tensor).
    """
    x = x.detach().double().cpu()
    rows, n = x.shape
    blocks = -(-n // block)
    padded = torch.full((rows, blocks * block), -math.inf, dtype=torch.float64)
    padded[:, :n] = x
    if tail is not None:
        padded[:, n:] = tail
    m = torch.full((rows,), -math.inf, dtype=torch.float64)
    l = torch.zeros(rows, dtype=torch.float64)
    out = torch.empty_like(x)
    for t in range(blocks):
        chunk = padded[:, t * block:(t + 1) * block]
        m_new = torch.maximum(m, chunk.amax(dim=1))
        m_safe = m_new if fault == "no_safe_max" else torch.where(m_new == -math.inf, 0.0, m_new)
        alpha = torch.exp(m - m_safe)
        l = (l if fault == "no_l_rescale" else l * alpha) + torch.exp(chunk - m_safe[:, None]).sum(dim=1)
        m = m_new
        if fault == "one_pass":
            cols = slice(t * block, min((t + 1) * block, n))
            out[:, cols] = torch.exp(x[:, cols] - m_safe[:, None]) / l[:, None]
    if fault == "one_pass":
        return out
    m_final = m if fault == "no_safe_max" else torch.where(m == -math.inf, 0.0, m)
    return torch.exp(x - m_final[:, None]) / l[:, None]


TAIL_MESSAGE = ("the padding lanes of the last block are loaded as 0, not -inf: a missing column then "
                "counts as a logit of 0 and adds exp(0 - m) to the sum (or raises the max, in a row of "
                "negative logits). Load with mask=offs < n_cols and other=float(\"-inf\")")
KERNEL_FAULTS = (
    ("one_pass", "one_pass",
     "each block is written during pass 1, with the running max and sum of that moment: the early blocks "
     "are divided by a sum that later blocks still add to. Write the output in a second loop, after pass 1 "
     "has seen the whole row"),
    ("no_l_rescale", "no_l_rescale",
     "the running sum is not rescaled when the max grows: multiply l_i by alpha = exp(m_i - m_new) "
     "before adding the block's sum"),
)


def diagnose_kernel_softmax(out, x, block: int, ref, tol: Tolerance) -> list[Finding]:
    """This kernel's own mistakes (the padding lanes, the unmasked load, the one-pass write, the
    sum not rescaled), each re-enacted on the input and named when it explains the output."""
    out = out.detach().double().cpu()
    ref = ref.cpu()
    rows, n = x.shape
    lanes = -(-n // block) * block - n
    where = f" (the output matches that mistake with block_size={block})"
    if lanes:
        if _matches(out, reenact(x, block, tail=0.0), ref, tol):
            return [Finding("tail_other_zero", TAIL_MESSAGE + where)]
        spill = after_row(x, lanes)
        known = ~spill.isnan().any(dim=1)   # rows whose following memory is the test's own
        if known.any():
            sim = reenact(x[known], block, tail=spill[known])
            wrong = ~torch.isclose(out, ref, atol=tol.atol, rtol=tol.rtol, equal_nan=True).all(dim=1)
            # Evidence: the known rows are what the unmasked reads give, and they differ from the right
            # answer, or only the rows that read past the tensor's end are wrong.
            telling = not torch.equal(sim, reenact(x[known], block)) or not (wrong & known).any()
            if telling and _matches(out[known], sim, ref[known], tol):
                return [Finding("unmasked_tail", "the last block is loaded without a mask: its lanes past the "
                                "row's end read the memory that follows the row (the next row, or past the "
                                "tensor) and count in the max and the sum. Load with mask=offs < n_cols, "
                                "other=float(\"-inf\")" + where)]
    for code, fault, message in KERNEL_FAULTS:
        if -(-n // block) < 2:
            break  # one block: no later block to rescale for, nothing written early
        if _matches(out, reenact(x, block, fault), ref, tol):
            return [Finding(code, message + where)]
    return []


def diagnose(out, x, block: int, ref, tol: Tolerance) -> list[Finding]:
    """The kernel's mistakes first, then problem 2's (the masked first block, alpha inverted, the
    tail never read, no normalisation, overflow without the max, the masked-row convention)."""
    found = diagnose_kernel_softmax(out, x, block, ref, tol)
    if found:
        return found
    row_max = x.detach().double().cpu().amax(dim=1)
    bad_rows = (~torch.isfinite(out.detach().cpu()) & torch.isfinite(ref)).any(dim=1)
    overflow = _overflow_finding(bad_rows, row_max, torch.float32)  # the kernel works in float32
    if overflow:
        return [overflow]
    return diagnose_softmax(out, x.detach().double().cpu(), block, ref, tol)


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------

LABEL_WIDTH = 46


def _verdict(case, passed, summary, findings=(), **figures) -> CaseVerdict:
    return CaseVerdict(case.label(), passed, summary, list(findings), case=case, width=LABEL_WIDTH, **figures)


def run_kernel_case(fn, case: RowsCase, device=None, timeout_s: float = DEFAULT_TIMEOUT_S) -> CaseVerdict:
    """Call fn(x, block_size=...) on the case's logits (on `device`, default: where kernels run
    here); compare with torch.softmax in float64."""
    if device is None:
        from .. import device as device_mod

        device = device_mod.current().device
    x = make_logits(case, device)

    def fail(summary, findings, **figures):
        return _verdict(case, False, summary, findings, **figures)

    # The interpreter's numpy warns at 0 / 0 and x / 0, which a row of -inf rightly computes.
    out, _, failed = guarded_call(fn, (x,), case.call_kwargs, (x,), ("x",), what="the softmax", device=device,
                                  timeout_s=timeout_s, quiet=("(invalid value|divide by zero) encountered",))
    if failed:
        return fail(*failed)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape or out.dtype != x.dtype:
        got = f"{out.dtype} {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        return fail("wrong return value", [Finding("bad_return", f"returned {got}; expected {x.dtype} "
                                                                 f"{tuple(x.shape)}, a tensor like x")])
    ref = softmax_reference(x)
    tol = TOLERANCES[x.dtype]
    out64 = out.detach().double().cpu()
    bad = ~torch.isclose(out64, ref, atol=tol.atol, rtol=tol.rtol, equal_nan=True)
    finite = torch.isfinite(ref)
    err = (out64 - ref)[finite].abs().nan_to_num(math.inf).max().item() if finite.any() else 0.0
    if bad.any():
        rows = bad.any(dim=1).nonzero().flatten().tolist()
        where = f"rows {rows[:4]}{'...' if len(rows) > 4 else ''} ({len(rows)} of {case.rows} wrong)"
        block = case.block_size or default_block(x.shape[1])
        # (the student edition names the mistakes it recorded, and no other)
        findings = unless_unrecorded(diagnose, out64, x, block, ref, tol)
        return fail(f"max|err| {err:.2g} > tol {tol.atol:g}; {where}", findings, max_error=err,
                    tolerance=tol.atol, where=where)
    return _verdict(case, True, f"max|err| {err:.1e} (tol {tol.atol:g}+{tol.rtol:g}|p|)", max_error=err,
                    tolerance=tol.atol)


def check_softmax_kernel(fn, cases, title: str = "") -> None:
    """One line per case; raise CheckFailed naming the likely cause if any case fails."""
    from .. import device as device_mod

    conclude(run_each(run_kernel_case, fn, cases, title, device=device_mod.current().device))


def default_block(cols: int) -> int:
    """The block the wrapper takes when none is given: the row's length rounded up to a power of
    two, at most 2048 columns (16 fp32 registers per thread at 4 warps; longer rows loop)."""
    return min(1 << max(cols - 1, 0).bit_length(), 2048)


def timing_inputs(case: RowsCase, device) -> tuple:
    """The timed (or counted) call's arguments: the case's logits, and its block size."""
    return (make_logits(case, device),), case.call_kwargs


SPEC = ProblemSpec(
    assignment="problem2b",
    notebook="problem2b.ipynb",
    kernel_cells=("imports", "softmax_kernel", "kernel"),
    student_cell="softmax_kernel",
    kernel_function="triton_softmax",
    answer_policy="triton",
    hints=_HINTS,
    # The visible graded cells' cases: whole blocks, then a partial last block.
    self_check_cases=(RowsCase(4, 256, 64, "float32"), RowsCase(6, 128, 32, "float16", seed=1),
                      RowsCase(5, 200, 64, "float32", seed=2), RowsCase(3, 100, 32, "float16", seed=3)),
    performance_points=2,
    timing=TimingPlan(gpu_case=RowsCase(8192, 8192, None, "float16"),
                      cpu_case=RowsCase(16, 4096, None, "float16"),
                      make_inputs=timing_inputs),
)
NOTEBOOK, KERNEL_CELLS = SPEC.notebook, SPEC.kernel_cells
STUDENT_CELL, ANSWER_POLICY = SPEC.student_cell, SPEC.answer_policy


@SELF_CHECK
def check(fn):
    """Self-check with the visible cases; raises CheckFailed with a likely cause when wrong."""
    check_softmax_kernel(fn, SPEC.self_check_cases, title="Problem 2b self-check (softmax kernel):")


assert SPEC.timing is not None  # the performance cell times against this plan
performance_points = performance.points_function(SPEC.assignment, SPEC.timing, SPEC.performance_points,
                                                gate=check, reference=reference_function)


# ---------------------------------------------------------------------------------------------
# Figure and benchmark
# ---------------------------------------------------------------------------------------------

@FIGURE
def plot_row_blocks(rows=4, cols=200, block=64, ax=None):
    """The grid of programs over a (rows, cols) matrix: one program per row, each reading its row in
    blocks of `block` columns; the lanes of the last block past the row's end are hatched (they
    must read -inf)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 0.6 * rows + 1.4))
    blocks = -(-cols // block)
    colors = plt.get_cmap("tab10")
    for r in range(rows):
        for t in range(blocks):
            start, end = t * block, min((t + 1) * block, cols)
            ax.add_patch(Rectangle((start, r), end - start, 0.8, facecolor=colors(t % 10), alpha=0.35,
                                   edgecolor="black", lw=0.6))
            ax.text(t * block + block / 2, r + 0.4, f"block {t}", ha="center", va="center", fontsize=7)
            if end < (t + 1) * block:
                ax.add_patch(Rectangle((end, r), (t + 1) * block - end, 0.8, facecolor="none", hatch="//",
                                       edgecolor="#d62728", lw=0.6))
        ax.text(-3, r + 0.4, f"program {r}\n(row {r})", ha="right", va="center", fontsize=7)
    ax.axvline(cols, color="#d62728", ls="--", lw=1)
    ax.text(cols + 1, -0.1, f"n_cols = {cols}: lanes past it are masked\n(loaded as -inf, never stored)",
            color="#d62728", fontsize=7, va="bottom")
    ax.set_xlim(-45, blocks * block + 2)
    ax.set_ylim(rows, -0.9)
    ax.set_xlabel("column")
    ax.set_yticks([])
    ax.set_title(f"grid = ({rows},): program r reads row r in blocks of {block} columns (pass 1, then pass 2)")
    plt.tight_layout()
    return ax


def _nominal_bandwidth_gbs() -> float | None:
    """The GPU memory's nominal bandwidth, 2 * memory clock * bus width (double data rate), when torch
    reports both (torch.cuda device properties of recent versions); None otherwise."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    clock_khz, bus_bits = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    if not clock_khz or not bus_bits:
        return None
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9


def _copy_bandwidth_gbs(numel=1 << 28, dtype=torch.float16) -> float:
    """A device-to-device copy of `numel` elements (512 MiB in float16) as GB/s read + written: what
    the memory delivers to a kernel that only moves data."""
    import triton

    src = torch.empty(numel, device="cuda", dtype=dtype).normal_()
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9


BENCH_SHAPES = ((16384, 1024), (8192, 4096), (4096, 8192), (2048, 32768), (512, 131072))


def bandwidth_benchmark(impls: dict, shapes=BENCH_SHAPES, dtype=torch.float16) -> dict:
    """Time each softmax of `impls` ({name: fn(x) -> y}) on every (rows, cols) shape of random
    logits with do_bench medians; GB/s counts the least any softmax moves, x read once and y written
    once. Returns {"gpu", "dtype", "nominal_gbs", "copy_gbs", "rows": [...]}, each row with
    impl, rows, cols, ms, gbs, share of the copy bandwidth, and the error against float64."""
    import triton

    nominal, copy = _nominal_bandwidth_gbs(), _copy_bandwidth_gbs()
    table = []
    for rows, cols in shapes:
        x = torch.randn(rows, cols, device="cuda", dtype=dtype)
        ref = torch.softmax(x.double(), dim=-1)
        moved = 2 * x.numel() * x.element_size()
        for name, fn in impls.items():
            row = {"impl": name, "rows": rows, "cols": cols}
            try:
                err = (fn(x).double() - ref).abs().max().item()
                ms = triton.testing.do_bench(lambda fn=fn, x=x: fn(x), warmup=25, rep=100, return_mode="median")
            except Exception as exc:  # a shape an implementation cannot take is a result, not a crash
                table.append({**row, "skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"})
                continue
            gbs = moved / (ms * 1e-3) / 1e9
            table.append({**row, "ms": ms, "gbs": gbs, "of_copy": gbs / copy,
                          "of_nominal": gbs / nominal if nominal else None, "max_err": err})
        del x, ref
        torch.cuda.empty_cache()
    return {"gpu": torch.cuda.get_device_name(0), "dtype": str(dtype).replace("torch.", ""),
            "nominal_gbs": nominal, "copy_gbs": copy, "rows": table}


def format_bandwidth(result: dict) -> str:
    nominal = f"{result['nominal_gbs']:.0f} GB/s" if result["nominal_gbs"] else "not reported by torch"
    lines = [f"{result['gpu']}, {result['dtype']}: nominal bandwidth {nominal}, "
             f"measured copy {result['copy_gbs']:.0f} GB/s (GB/s below: 2 x rows x cols x bytes / time)",
             f"{'implementation':<22} {'rows':>6} {'cols':>7} {'ms':>9} {'GB/s':>7} {'of copy':>8} "
             f"{'of nominal':>10} {'max|err|':>9}"]
    for r in result["rows"]:
        head = f"{r['impl']:<22} {r['rows']:>6} {r['cols']:>7}"
        if "skipped" in r:
            lines.append(f"{head}  skipped: {r['skipped']}")
            continue
        of_nominal = f"{r['of_nominal']:.0%}" if r["of_nominal"] is not None else "-"
        lines.append(f"{head} {r['ms']:>9.4f} {r['gbs']:>7.0f} {r['of_copy']:>8.0%} {of_nominal:>10} "
                     f"{r['max_err']:>9.1e}")
    return "\n".join(lines)


def plot_bandwidth(result: dict, path=None):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in dict.fromkeys(r["impl"] for r in result["rows"]):
        pts = [r for r in result["rows"] if r["impl"] == name and "skipped" not in r]
        ax.plot([r["cols"] for r in pts], [r["gbs"] for r in pts], "o-", label=name)
    ax.axhline(result["copy_gbs"], color="#555", ls=":", label="device-to-device copy")
    if result["nominal_gbs"]:
        ax.axhline(result["nominal_gbs"], color="#d62728", ls="--", label="nominal bandwidth")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("columns per row (rows x cols about 16-64 M elements)")
    ax.set_ylabel("GB/s (x read once + y written once)")
    ax.set_title(f"Softmax on {result['gpu']}, {result['dtype']}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig


def benchmark(fn, shapes=BENCH_SHAPES, plot_path=None):
    """GB/s of `fn` next to torch.softmax (and the reference kernel, where the course's sources are
    at hand) against the GPU's bandwidth. Under the CPU interpreter, or while grading, it only says
    why it does nothing."""
    from .. import benchmark as bench

    reason = bench.kernel_skip_reason("measure your kernel's bandwidth")
    if reason:
        print(reason)
        return None
    reference = reference_function(SPEC.assignment)
    # `python -m autograder bench --problem problem2b` hands in the reference kernel itself.
    is_reference = reference is not None and getattr(fn, "__module__", None) == reference.__module__
    impls = {"reference kernel" if is_reference else "your kernel": fn,
             "torch.softmax": lambda x: torch.softmax(x, dim=-1)}
    if reference is not None and not is_reference:
        impls["reference kernel"] = reference
    result = bandwidth_benchmark(impls, shapes)
    print(format_bandwidth(result))
    plot_bandwidth(result, plot_path)
    return result
