"""Problem 5: grouped-query attention (GQA) in Triton.

Hq query heads share Hkv K/V heads: query head h reads K/V head h // (Hq // Hkv). The kernel
reads K and V in place; a solution that repeats them in memory before the kernel gets the
right numbers for the wrong reason, and the checks here say so.
"""
from __future__ import annotations

import contextlib

import torch

from .. import performance
from ..checks import TOLERANCES, CheckFailed, assert_cases, stderr_to_stdout
from ..diagnose import Finding, describe_exception
from ..feedback_run import FIGURE, SELF_CHECK
from ..inputs import Case
from ..performance import TimingPlan
from ..references import attention_reference
from ..verdict import CaseVerdict, report
from . import reference_function
from .online_softmax_faults import diagnose_online_softmax
from .spec import ProblemSpec

_HINTS = (
    "Start with kv_head: write the group size G = Hq / Hkv for a small case (Hq = 8, Hkv = 2) and list, "
    "for query heads 0 to 7, which K/V head each must read. The heads of one group are neighbours "
    "(0-3, then 4-7), not every Hkv-th head: a remainder spreads them out, a quotient keeps them together.",
    "For program_coordinates, think of the program id as a number written in mixed radix: the last "
    "digit (the fastest) counts the query heads within a group (base G), the next counts query blocks "
    "(base n_m_blocks), then K/V heads (base Hkv), and what is left is the batch. Peel the digits off from "
    "the fastest with a remainder and a quotient each; the query head is then rebuilt from its K/V head "
    "and its place in the group.",
    "kv_head: a quotient by the group size, never a remainder. program_coordinates: four digits, "
    "fastest first (place in the group, query block, K/V head, batch), each taken with a remainder and "
    "removed with a quotient; the last digit needs no remainder. The query head is where its group starts "
    "plus its place in it.",
)

SPEC = ProblemSpec(
    assignment="problem5",
    notebook="problem5.ipynb",
    kernel_cells=("imports", "gqa_mapping", "kernel"),
    student_cell="gqa_mapping",
    kernel_function="flash_attention_gqa",
    answer_policy="triton",
    hints=_HINTS,
    self_check_cases=(Case(1, 4, 128, 64, H_kv=2), Case(1, 4, 128, 32, H_kv=1, seed=1),
                      Case(1, 8, 200, 64, H_kv=2, seed=2)),
    # Performance points (autograder.performance): the kernel's time over the reference kernel's.
    performance_points=2,
    timing=TimingPlan(gpu_case=Case(4, 32, 4096, 64, H_kv=8), cpu_case=Case(1, 4, 256, 32, H_kv=2)),
)

SELF_CHECK_SCHEDULES = [(2, 4, 2, 3)]


# ---------------------------------------------------------------------------------------------
# K/V must be read in place: catch a wrapper that repeats them before launching the kernel.

def _storage(t):
    try:
        return t.untyped_storage().data_ptr()
    except Exception:  # tensors without storage
        return None


def _tensors(values):
    for x in values:
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, (list, tuple)):
            yield from _tensors(x)


@contextlib.contextmanager
def _launched_tensors():
    """Record every tensor handed to a Triton kernel launch inside the block."""
    from triton.runtime.jit import KernelInterface

    seen = []
    previous = KernelInterface.__getitem__   # may already be the grader's counting wrapper

    def recording_getitem(self, grid):
        launcher = previous(self, grid)

        def launch(*args, **kwargs):
            seen.extend(_tensors(list(args) + list(kwargs.values())))
            return launcher(*args, **kwargs)
        return launch

    KernelInterface.__getitem__ = recording_getitem
    try:
        yield seen
    finally:
        KernelInterface.__getitem__ = previous


class _KVWatch:
    """Wraps the function under test and keeps, per call, the tensors its kernels received."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = {}

    def __call__(self, q, k, v, **kwargs):
        with _launched_tensors() as seen:
            result = self.fn(q, k, v, **kwargs)
        outputs = list(_tensors(result if isinstance(result, (tuple, list)) else [result]))
        self.calls[id(k)] = (seen, outputs)
        return result

    def check(self, watch, q, k, v, case):
        """extra_checks hook: a Finding when K or V reached the kernel as a larger copy."""
        seen, outputs = self.calls.pop(id(k), ([], []))
        self.calls.clear()  # the cached-answer probe's call, if any: its tensors need not live on
        return kv_copy_finding(watch, q, k, v, seen, outputs)


def _is_repeat_of(t, k, v) -> bool:
    """Does `t` hold K or V with each head repeated (interleaved, as repeat_interleave does, or
    tiled, as repeat does)? A bigger tensor with other contents (a contiguous copy of q) is not."""
    b, hkv, n, d = k.shape
    if t.dim() != 4 or t.shape[0] != b or t.shape[2:] != k.shape[2:] or t.shape[1] % hkv or t.dtype != k.dtype:
        return False
    group = t.shape[1] // hkv
    for x in (k, v):
        for repeated in (x.repeat_interleave(group, dim=1), x.repeat(1, group, 1, 1)):
            if torch.equal(t.to(repeated.device), repeated):
                return True
    return False


def kv_copy_finding(watch, q, k, v, launched=(), outputs=()):
    """Finding("kv_repeated") when K or V were copied into more memory before the kernel ran.

    Two independent witnesses: the aten ops that copied k or v into a bigger tensor
    (repeat_interleave, expand+reshape, repeat, index_select, indexing: `watch.enlarged_copies`),
    and the tensors the Triton kernel was launched with: any argument that is neither an input nor
    a returned output and holds K or V with its heads repeated (this also catches torch.cat / stack
    and a buffer filled head by head, which aten sees only as writes into a fresh tensor).
    """
    names = {1: "k", 2: "v"}
    copies = sorted({f"{op} ({names[i]})" for op, i in getattr(watch, "enlarged_copies", []) if i in names})
    allowed = {_storage(t) for t in list((q, k, v)) + list(outputs)}
    kv_numel = max(k.numel(), v.numel())
    foreign = [t for t in launched if t.numel() > kv_numel and _storage(t) not in allowed
               and _is_repeat_of(t, k, v)]
    if not copies and not foreign:
        return None
    evidence = []
    if copies:
        evidence.append("aten " + ", ".join(copies) + " made a larger copy")
    if foreign:
        shapes = sorted({str(tuple(t.shape)) for t in foreign})
        evidence.append(f"the kernel was launched on a {', '.join(shapes)} tensor that is not an input, "
                        f"where K/V are {tuple(k.shape)}")
    group = q.shape[1] // k.shape[1]
    return Finding("kv_repeated", "K/V repeated in memory before the kernel: " + "; ".join(evidence)
                   + f". That costs {group}x the K/V memory and traffic GQA exists to save: launch the kernel on "
                   "k and v as given and let each query head read K/V head h // (Hq // Hkv) in place.")


# ---------------------------------------------------------------------------------------------
# Which K/V head did each query head read? Re-enact the usual mapping mistakes.

def _observed_kv_heads(o64, q, k, v, case):
    """For each query head, the K/V head whose attention the output equals (None: none does)."""
    tol = TOLERANCES.get(q.dtype, TOLERANCES[torch.float16])
    hq, hkv = q.shape[1], k.shape[1]
    o = o64.detach().double().cpu()
    q, k, v = (t.detach().cpu() for t in (q, k, v))
    mask = case.mask_kwargs if case is not None else {}
    observed = []
    for h in range(hq):
        match = None
        for j in range(hkv):
            sim, _ = attention_reference(q[:, h:h + 1], k[:, j:j + 1], v[:, j:j + 1], **mask)
            if bool(torch.isclose(o[:, h:h + 1], sim, atol=tol.atol, rtol=tol.rtol).all()):
                match = j
                break
        observed.append(match)
    return observed


def _mapping_str(mapping, limit=8):
    shown = ", ".join(f"{h}->{'?' if j is None else j}" for h, j in enumerate(mapping[:limit]))
    return shown + (", ..." if len(mapping) > limit else "")


def diagnose_kv_heads(o64, q, k, v, ref_o, case):
    """Name a wrong query-head -> K/V-head mapping when the output is attention with another K/V head."""
    hq, hkv = q.shape[1], k.shape[1]
    group = hq // hkv
    observed = _observed_kv_heads(o64, q, k, v, case)
    right = [h // group for h in range(hq)]
    if observed == right or all(j is None for j in observed):
        return []   # the heads are right (the error is elsewhere), or nothing matches any head

    def same(pattern):
        return all((p if p < hkv else None) == o for p, o in zip(pattern, observed, strict=True))

    seen = f"query head -> K/V head read: {_mapping_str(observed)}; right: {_mapping_str(right)}"
    if same([h % hkv for h in range(hq)]):
        return [Finding("kv_head_modulo", f"query head h reads K/V head h % Hkv ({seen}): the {group} query "
                                          "heads of a group are neighbours, not every Hkv-th head")]
    if same([0] * hq):
        return [Finding("kv_head_zero", f"every query head reads K/V head 0 ({seen}): the divisor is too large "
                                        "or the group size came out as 0: a group holds Hq / Hkv query heads")]
    for wrong in range(1, hq + 1):
        if wrong != group and same([h // wrong for h in range(hq)]):
            return [Finding("kv_group_size", f"query heads are grouped in runs of {wrong} instead of "
                                             f"{group} ({seen}): check how the group size is computed")]
    if any(j is not None and j != r for j, r in zip(observed, right, strict=True)):
        return [Finding("wrong_kv_head", f"some query heads read the wrong K/V head ({seen}): each run of "
                                         f"{group} neighbouring query heads shares one K/V head")]
    return []


# A wrong K/V head first; then the online-softmax mistakes, which a GQA kernel can make as problem 3's can.
DIAGNOSES = (diagnose_kv_heads, diagnose_online_softmax)


def assert_gqa_cases(fn, cases, title="", **kwargs):
    """assert_cases with this problem's K/V-copy check and head-mapping diagnosis."""
    watched = _KVWatch(fn)
    assert_cases(watched, cases, title=title, extra_checks=(watched.check,), diagnoses=DIAGNOSES,
                 **kwargs)


# ---------------------------------------------------------------------------------------------
# The launch order.

def expected_schedule(batch, n_q_heads, n_kv_heads, n_m_blocks):
    """(batch, query head, query block) per program id: batch, K/V head, block, head in group."""
    group = n_q_heads // n_kv_heads
    rows = []
    for b in range(batch):
        for hkv in range(n_kv_heads):
            for m in range(n_m_blocks):
                for g in range(group):
                    rows.append((b, hkv * group + g, m))
    return rows


def _natural_schedule(batch, n_q_heads, n_m_blocks):
    return [(b, h, m) for b in range(batch) for h in range(n_q_heads) for m in range(n_m_blocks)]


def schedule_findings(got, batch, n_q_heads, n_kv_heads, n_m_blocks) -> list[Finding]:
    """What is wrong with the schedule `got` (a list of (b, hq, m) per program id), or []."""
    want = expected_schedule(batch, n_q_heads, n_kv_heads, n_m_blocks)
    if got == want:
        return []
    valid = {w: i for i, w in enumerate(want)}
    first_at: dict[tuple, int] = {}
    for pid, item in enumerate(got):
        if item not in valid:
            return [Finding("schedule_out_of_range", f"program {pid} computes (batch, query head, block) = {item}, "
                                                     f"which does not exist for B={batch}, Hq={n_q_heads} and "
                                                     f"{n_m_blocks} query blocks")]
        if item in first_at:
            missing = next(w for w in want if w not in set(got))
            return [Finding("schedule_not_bijective", f"programs {first_at[item]} and {pid} both compute "
                                                      f"(batch, query head, block) = {item}, and {missing} is "
                                                      "computed by no program: each must come from exactly one "
                                                      "program id")]
        first_at[item] = pid
    # got may be shorter than want (a launch that skipped programs): compare the programs it has.
    pid = next(i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b)
    where = f"program {pid} computes (batch, query head, block) = {got[pid]}, the order asks for {want[pid]}"
    if got == _natural_schedule(batch, n_q_heads, n_m_blocks):
        return [Finding("schedule_not_grouped", f"{where}: this is the plain order (query block fastest, then "
                                                "head); the query heads of a group should be the fastest index, "
                                                "so that neighbouring programs read the same K/V tiles")]
    return [Finding("schedule_order", f"{where}: from slowest to fastest the order is batch, K/V head, "
                                      "query block, query head within its group")]


def assert_schedule(launch_schedule, configs, title=""):
    """Check the program order for each (B, Hq, Hkv, n_m_blocks); one line each, CheckFailed if any fails."""
    failures, verdicts = [], []
    with stderr_to_stdout():
        if title:
            print(title)
        for batch, n_q_heads, n_kv_heads, n_m_blocks in configs:
            label = f"B={batch} Hq={n_q_heads} Hkv={n_kv_heads} query blocks={n_m_blocks}"
            try:
                table = launch_schedule(batch, n_q_heads, n_kv_heads, n_m_blocks)
                got = [tuple(int(x) for x in row) for row in table.tolist()]
                findings = schedule_findings(got, batch, n_q_heads, n_kv_heads, n_m_blocks)
                summary = "wrong order" if findings else f"{len(got)} programs, each block once, in group order"
            except Exception as exc:  # student code may raise anything; the verdict must not crash
                findings, summary = [describe_exception(exc)], "the schedule probe did not run"
            verdicts.append(report(CaseVerdict(label, not findings, summary, findings)))
            if findings:
                failures.append((label, findings[0].message))
    if failures:
        label, reason = failures[0]
        raise CheckFailed(f"{len(failures)} of {len(configs)} schedules wrong; first: {label}: {reason}", verdicts)
    print(f"All {len(configs)} schedules in the right order.")


@SELF_CHECK
def check(fn, launch_schedule=None):
    """Self-check with the visible shapes; raises CheckFailed with a likely cause when wrong."""
    assert_gqa_cases(fn, SPEC.self_check_cases, title="Problem 5 self-check (output and log-sum-exp):")
    if launch_schedule is not None:
        assert_schedule(launch_schedule, SELF_CHECK_SCHEDULES, title="Problem 5 self-check (launch order):")


assert SPEC.timing is not None  # the performance cell times against this plan
performance_points = performance.points_function(SPEC.assignment, SPEC.timing, SPEC.performance_points,
                                                gate=check, reference=reference_function)


# ---------------------------------------------------------------------------------------------
# The picture.

@FIGURE
def plot_head_groups(n_q_heads=8, n_kv_heads=2, n_m_blocks=3, n_programs=12, ax=None):
    """Left: which K/V head each query head reads (right mapping); middle: the h % Hkv mistake;
    right: the first program ids of the launch order, coloured by the K/V head they read."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle

    group = n_q_heads // n_kv_heads
    colors = plt.get_cmap("tab10")
    if ax is None:
        fig, ax = plt.subplots(1, 3, figsize=(14, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    else:
        fig = ax[0].figure

    def heads(a, mapping, title):
        a.set_xlim(-0.7, n_q_heads - 0.3)
        a.set_ylim(-0.6, 2.0)
        a.axis("off")
        a.set_title(title, fontsize=10)
        kv_x = [(j + 0.5) * n_q_heads / n_kv_heads - 0.5 for j in range(n_kv_heads)]
        for j, x in enumerate(kv_x):
            a.add_patch(Rectangle((x - 0.45, -0.3), 0.9, 0.5, color=colors(j), alpha=0.85))
            a.text(x, -0.05, f"K/V {j}", ha="center", va="center", fontsize=8, color="white")
        for h in range(n_q_heads):
            j = mapping(h)
            a.add_patch(Rectangle((h - 0.4, 1.3), 0.8, 0.45, color=colors(h // group), alpha=0.85))
            a.text(h, 1.52, f"q{h}", ha="center", va="center", fontsize=8, color="white")
            a.add_patch(FancyArrowPatch((h, 1.28), (kv_x[j], 0.22), arrowstyle="-|>", mutation_scale=8,
                                        color=colors(j), lw=1.2))

    heads(ax[0], lambda h: h // group, f"right: head h reads K/V h // {group}")
    heads(ax[1], lambda h: h % n_kv_heads, f"the usual bug: h % {n_kv_heads}")
    order = expected_schedule(1, n_q_heads, n_kv_heads, n_m_blocks)[:n_programs]
    a = ax[2]
    a.set_xlim(-0.5, n_programs - 0.5)
    a.set_ylim(-0.2, 1.6)
    a.axis("off")
    a.set_title("launch order: program ids 0, 1, 2, ... (batch 0)", fontsize=10)
    for pid, (_, h, m) in enumerate(order):
        a.add_patch(Rectangle((pid - 0.45, 0.2), 0.9, 1.0, color=colors(h // group), alpha=0.85))
        a.text(pid, 0.85, f"q{h}", ha="center", va="center", fontsize=8, color="white")
        a.text(pid, 0.5, f"blk {m}", ha="center", va="center", fontsize=7, color="white")
        a.text(pid, 0.05, str(pid), ha="center", va="center", fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The benchmark.

def _gqa_inputs(batch, n_q_heads, n_kv_heads, seq_len, head_dim, dtype):
    torch.manual_seed(0)
    q = torch.randn(batch, n_q_heads, seq_len, head_dim, device="cuda", dtype=dtype)
    k = torch.randn(batch, n_kv_heads, seq_len, head_dim, device="cuda", dtype=dtype)
    v = torch.randn_like(k)
    return q, k, v


def _sdpa_gqa(backend_name):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def run(q, k, v):
        with sdpa_kernel(backend):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    return run


def gqa_peers(fn) -> dict:
    """The student's kernel, SDPA with enable_gqa (two backends pinned), and the kernel on repeated K/V."""
    def repeated(q, k, v):
        group = q.shape[1] // k.shape[1]
        return fn(q, k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1))[0]

    return {
        "your kernel": lambda q, k, v: fn(q, k, v)[0],
        "SDPA FLASH_ATTENTION": _sdpa_gqa("FLASH_ATTENTION"),
        "SDPA CUDNN_ATTENTION": _sdpa_gqa("CUDNN_ATTENTION"),
        "repeat K/V + your kernel": repeated,
    }


def run_gqa_benchmark(impls: dict, shapes, dtype) -> list[dict]:
    """Time every implementation on every (B, Hq, Hkv, L, D); a refusal becomes a row with its reason."""
    from .. import benchmark as bench

    rows = []
    for batch, n_q_heads, n_kv_heads, seq_len, head_dim in shapes:
        q, k, v = _gqa_inputs(batch, n_q_heads, n_kv_heads, seq_len, head_dim, dtype)
        for name, impl in impls.items():
            row = {"impl": name, "B": batch, "H": n_q_heads, "H_kv": n_kv_heads, "L": seq_len, "D": head_dim,
                   "dtype": str(dtype).replace("torch.", "")}
            try:
                m = bench.measure(impl, q, k, v)
                flops = bench.attention_flops(batch, n_q_heads, seq_len, seq_len, head_dim)
                rows.append({**row, **m, "tflops": flops / (m["ms"] * 1e-3) / 1e12})
            except Exception as exc:  # a backend that refuses GQA (or this GPU) is a result, not a crash
                rows.append({**row, "skipped": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]}"
                             if str(exc).strip() else type(exc).__name__})
        del q, k, v
        torch.cuda.empty_cache()
    return rows


def sharing_cost(fn, dtype, batch=4, n_q_heads=32, n_kv_heads=8, seq_len=4096, head_dim=128) -> dict:
    """Time the kernel with Hq query heads on Hkv K/V heads and on Hq K/V heads (the same query work)."""
    from .. import benchmark as bench

    times = {}
    for heads_kv in (n_kv_heads, n_q_heads):
        q, k, v = _gqa_inputs(batch, n_q_heads, heads_kv, seq_len, head_dim, dtype)
        times[heads_kv] = bench.measure(lambda a, b, c: fn(a, b, c)[0], q, k, v)["ms"]
        del q, k, v
        torch.cuda.empty_cache()
    return {"gqa_ms": times[n_kv_heads], "mha_ms": times[n_q_heads], "ratio": times[n_kv_heads] / times[n_q_heads]}


def benchmark(fn, lengths=(1024, 2048, 4096, 8192), head_dim=128, batch=4, n_q_heads=32, n_kv_heads=8,
              plot_path=None):
    """Time `fn` against SDPA with enable_gqa (FLASH_ATTENTION and CUDNN_ATTENTION pinned) and against
    repeating K/V first, then show that sharing K/V heads costs the kernel nothing.

    Under the CPU interpreter or while grading this only says why it does nothing.
    """
    from .. import benchmark as bench

    reason = bench.kernel_skip_reason("compare your kernel with PyTorch")
    if reason:
        print(reason)
        return None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    shapes = [(batch, n_q_heads, n_kv_heads, n, head_dim) for n in lengths]
    impls = gqa_peers(fn)
    reference = reference_function(SPEC.assignment)
    if reference is not None:  # the course's own kernel, where its sources are at hand
        impls["reference kernel"] = lambda q, k, v: reference(q, k, v)[0]
    rows = run_gqa_benchmark(impls, shapes, dtype)
    print(f"Hq={n_q_heads} query heads on Hkv={n_kv_heads} K/V heads (H below is Hq):")
    print(bench.format_table(rows))
    print(bench.speedup_table(rows, "your kernel"))
    refused = {r["impl"]: r["skipped"] for r in rows if "skipped" in r}
    for name, why in refused.items():
        print(f"note: {name} did not run with enable_gqa=True here: {why}")
    cost = sharing_cost(fn, dtype, batch=batch, n_q_heads=n_q_heads, n_kv_heads=n_kv_heads,
                        seq_len=max(lengths) // 2, head_dim=head_dim)
    print(f"\nSharing K/V heads: Hq={n_q_heads}, Hkv={n_kv_heads} takes {cost['gqa_ms']:.3f} ms, "
          f"Hq=Hkv={n_q_heads} takes {cost['mha_ms']:.3f} ms (the same query work): ratio {cost['ratio']:.2f}.")
    bench.plot(rows, plot_path, title=f"GQA B={batch} Hq={n_q_heads} Hkv={n_kv_heads} D={head_dim} "
                                      f"{str(dtype)[6:]} on {torch.cuda.get_device_name(0)}")
    return {"rows": rows, "sharing": cost}
