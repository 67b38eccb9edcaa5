"""Problem 7: the FlashAttention-2 backward in Triton (non-causal and causal).

The graded cells call `assert_backward_cases`: dQ, dK and dV of the student's kernels (through
autograd, as training computes them) against float64 autograd of the reference attention
(`checks.run_grad_case`), with this problem's mistakes re-enacted in float64 for a likely cause:
- `reenact_backward`: the backward's arithmetic written out in float64 over the whole L x L matrix,
  with one switch per typical mistake (Delta missing, subtracted outside the product or summed
  over one key block; P rebuilt with the natural-log LSE in exp2; the softmax scale missing or
  wrong in dQ or dK; the causal mask missing in the recompute, for the kernel's own diagonal tiles);
- `backward_diagnoses(fn)`: names the mistake whose re-enactment the three gradients match;
- `benchmark(fn)`: forward+backward and backward alone against SDPA's FLASH_ATTENTION backend
  (pinned), with TFLOPS, on a GPU.
"""
from __future__ import annotations

import inspect
import math

import torch

from .. import performance
from ..checks import GRAD_TOLERANCES, assert_grad_cases
from ..diagnose import Finding, explains
from ..feedback_run import FIGURE, SELF_CHECK
from ..inputs import Case, make_grad, make_qkv
from ..performance import TimingPlan
from ..references import attention_mask, attention_reference
from . import reference_function
from .delta_faults import wrong_delta
from .spec import ProblemSpec

# The hint ladder (autograder.hints.hint("problem7")): two nudges, then the idea, never the code.
_HINTS = (
    "Start with recompute_p and test it on paper: the forward stored lse = log(sum_j e^(s_ij)) in natural "
    "log, and qk * qk_scale is s_ij in base-2 units (s_ij * log2(e)). exp2 of a base-2 exponent must "
    "subtract the LSE in base-2 units too. On the diagonal tiles of a causal kernel, a key after its query "
    "had probability 0 in the forward: it must have 0 here.",
    "Write the chain rule for one tile with S = softmax_scale * Q K^T: dV = P^T dO, dP = dO V^T, "
    "dS = P * (dP - Delta) with Delta_i = sum_d O_id dO_id (the preprocess), then dQ = softmax_scale * dS K "
    "and dK = softmax_scale * dS^T Q. dV has no scale (O = P V does not involve it); dQ and dK both do. "
    "Cast P and dS to the 16-bit dtype before each tl.dot, and accumulate in float32.",
    "softmax_delta: the row sums of o times do, in float32. recompute_p: two to the power of the base-2 "
    "score minus the LSE converted to base 2; on the diagonal, zero wherever the key comes after the query. "
    "score_grad: p times (dp minus each row's delta). dkdv_update: the tile's scores from q and k, p from "
    "them, dv grows by p transposed times do, dp is do times v transposed, ds from score_grad, dk grows by "
    "the scaled ds transposed times q. dq_update: the same p, dp and ds, and dq grows by the scaled ds times k.",
)


def _timing_inputs(case: Case, device):
    """The timed call's arguments: (q, k, v, do), `causal`, and `deterministic`: the two kinds of
    program, which call all five of the student's functions. (Without it, long D <= 64 inputs on
    Hopper take the one kernel that adds dQ up by atomics, whose math is the course's own.)"""
    q, k, v = make_qkv(case, device=device)
    return (q, k, v, make_grad(case, device=device)), {"causal": case.is_causal, "deterministic": True}


SPEC = ProblemSpec(
    assignment="problem7",
    notebook="problem7.ipynb",
    # Cells that together make the kernel module: imports, the student's cell, the kernels + autograd.
    kernel_cells=("imports", "backward", "kernel"),
    student_cell="backward",
    kernel_function="flash_attention_grads",
    answer_policy="triton",
    hints=_HINTS,
    # What a self-learner can run at any time (the visible graded cells' shapes).
    self_check_cases=(Case(1, 2, 64, 32, seed=1), Case(1, 2, 80, 16, seed=2, causal=True)),
    direction="backward",
    # Performance points (autograder.performance): forward + backward against the reference kernels.
    performance_points=2,
    timing=TimingPlan(gpu_case=Case(4, 16, 4096, 64, causal=True), cpu_case=Case(1, 1, 64, 16, causal=True),
                      make_inputs=_timing_inputs,
                      output_atol={dtype: 2 * tol.atol for dtype, tol in GRAD_TOLERANCES.items()}),
)


# ---------------------------------------------------------------------------------------------
# The backward in float64, with the typical mistakes as switches.
# ---------------------------------------------------------------------------------------------

# Tiles the re-enactment assumes when a function does not say which it uses: (BLOCK_N1, BLOCK_M2,
# BLOCK_N2): the dK/dV program's keys, the dQ program's queries, the dQ program's key step.
_FALLBACK_TILES = ((32, 32, 16), (128, 128, 32), (64, 64, 32))


def tile_sizes(fn, q, causal=False):
    """(BLOCK_N1, BLOCK_M2, BLOCK_N2) of the kernels behind `fn` for input `q`, from its launch config."""
    config = getattr(fn, "launch_config", None)
    if config is None:
        return None
    *_, block_n1, block_m2, block_n2, _, _ = config(q, causal)
    return int(block_n1), int(block_m2), int(block_n2)


def _same_tile(n, tile, device):
    idx = torch.arange(n, device=device)
    return (idx[:, None] // tile) == (idx[None, :] // tile)


def _block_sums(x, width):
    """Row sums of x over aligned blocks of `width` columns, broadcast back to every column."""
    n = x.shape[-1]
    pad = (-n) % width
    padded = torch.nn.functional.pad(x, (0, pad))
    sums = padded.unflatten(-1, (-1, width)).sum(-1, keepdim=True).expand(*padded.shape[:-1], -1, width)
    return sums.flatten(-2)[..., :n]


def exact_parts(q, k, v, do, causal=False) -> dict:
    """What every re-enactment shares, in float64: the inputs, the scores S, the reference O and LSE,
    dP = dO V^T and Delta = rowsum(O * dO)."""
    q, k, v, do = (t.detach().double() for t in (q, k, v, do))
    o, lse = attention_reference(q, k, v, is_causal=causal)
    return {"q": q, "k": k, "v": v, "do": do, "lse": lse, "causal": causal,
            "s": (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]),
            "dp": do @ v.transpose(-1, -2), "row_delta": (o * do).sum(-1, keepdim=True)}


def reenact_backward(q, k, v, do, causal=False, tiles=(32, 32, 16), p_mode="right", delta="right",
                     dq_factor=1.0, dk_factor=1.0, recompute_mask=True, parts=None):
    """(dq, dk, dv) in float64 of a backward kernel with the given mistakes.

    p_mode:   "right" exp(s - lse); "lse_natural" exp2 of base-2 scores minus the natural-log LSE,
              i.e. exp(s - lse * ln 2); "exp_for_exp2" tl.exp of base-2 scores, exp(log2(e) (s - lse)).
    delta:    "right" rowsum(dO * O); "zero" (dS = P * dP); "outside" (dS = P * dP - Delta);
              "block" Delta summed over the current key block only (BLOCK_N1 keys for dK, BLOCK_N2 for dQ).
    dq_factor, dk_factor: dQ and dK times this (1/scale: the scale missing).
    recompute_mask=False: causal, but P is not masked on the diagonal tiles (BLOCK_N1 x BLOCK_N1 for
              dK/dV, BLOCK_M2 x BLOCK_M2 for dQ), where keys after their query then count.
    parts: exact_parts(q, k, v, do, causal) when already at hand.
    """
    parts = parts or exact_parts(q, k, v, do, causal)
    q, k, v, do, lse, s = (parts[name] for name in ("q", "k", "v", "do", "lse", "s"))
    dp, row_delta = parts["dp"], parts["row_delta"]
    n, d = q.shape[2], q.shape[3]
    block_n1, block_m2, block_n2 = tiles
    scale = 1.0 / math.sqrt(d)
    if p_mode == "right":
        p = torch.exp(s - lse[..., None])
    elif p_mode == "lse_natural":
        p = torch.exp(s - lse[..., None] * math.log(2))
    elif p_mode == "exp_for_exp2":
        p = torch.exp(math.log2(math.e) * (s - lse[..., None]))
    else:
        raise ValueError(f"unknown p_mode {p_mode!r}")
    right = attention_mask(n, causal, device=q.device)
    if right is None:
        p_kv = p_q = p
    elif recompute_mask:
        p_kv = p_q = p.masked_fill(~right, 0.0)
    else:  # the diagonal tiles are visited without the mask; the tiles above them are never visited
        p_kv = p.masked_fill(~(right | _same_tile(n, block_n1, q.device)), 0.0)
        p_q = p.masked_fill(~(right | _same_tile(n, block_m2, q.device)), 0.0)

    def score_grad(p_, width):
        if delta == "right":
            return p_ * (dp - row_delta)
        if delta == "zero":
            return p_ * dp
        if delta == "outside":
            return p_ * dp - row_delta
        if delta == "block":
            return p_ * (dp - _block_sums(p_ * dp, width))
        raise ValueError(f"unknown delta {delta!r}")

    dv = p_kv.transpose(-1, -2) @ do
    dk = dk_factor * scale * (score_grad(p_kv, block_n1).transpose(-1, -2) @ q)
    dq = dq_factor * scale * (score_grad(p_q, block_n2) @ k)
    return dq, dk, dv


_DV_RIGHT = " (dV is right: it does not depend on {what})"
MISTAKES: dict[str, tuple[dict, str]] = {
    # code: (re-enactment switches, message)
    "delta_missing": (dict(delta="zero"),
                      "dS = P * dP: the minus Delta is missing (Delta is zero, or score_grad does not subtract it). "
                      "The softmax couples every score of a row, so dS = P * (dP - Delta), with Delta_i = "
                      "sum_d O_id dO_id from the preprocess" + _DV_RIGHT.format(what="dS")),
    "delta_outside_product": (dict(delta="outside"),
                              "dS = P * dP - Delta: Delta is subtracted outside the product; it belongs inside, "
                              "dS = P * (dP - Delta), so that a key with P = 0 gets no gradient"
                              + _DV_RIGHT.format(what="dS")),
    "delta_one_block": (dict(delta="block"),
                        "Delta is summed over one block of keys only (the row sum of P * dP over the tile): "
                        "Delta_i = sum_j P_ij dP_ij runs over the whole row, which is why the preprocess computes "
                        "it once as rowsum(dO * O) and the kernels receive it" + _DV_RIGHT.format(what="Delta")),
    "lse_base": (dict(p_mode="lse_natural"),
                 "P is rebuilt with exp2 from the natural-log LSE: the scores qk * qk_scale are in base-2 units, so "
                 "the LSE must be too (lse * log2(e)); as written each row of P is e^((1 - ln 2) lse_i) times too "
                 "large, and all three gradients are off"),
    "exp_for_exp2": (dict(p_mode="exp_for_exp2"),
                     "P is rebuilt with tl.exp from base-2 scores: exp(x * log2(e)) is not e^x; with qk_scale "
                     "(which carries log2(e)) use tl.math.exp2"),
    "dk_no_scale": (dict(dk_factor="1/scale"),
                    "dK lacks the softmax scale: S = scale * Q K^T, so dK = scale * dS^T Q (dK is sqrt(D) times too "
                    "large; dQ and dV are right)"),
    "dq_no_scale": (dict(dq_factor="1/scale"),
                    "dQ lacks the softmax scale: S = scale * Q K^T, so dQ = scale * dS K (dQ is sqrt(D) times too "
                    "large; dK and dV are right)"),
    "dq_dk_no_scale": (dict(dq_factor="1/scale", dk_factor="1/scale"),
                       "dQ and dK lack the softmax scale: S = scale * Q K^T, so dQ = scale * dS K and dK = scale * "
                       "dS^T Q (both sqrt(D) times too large; dV, which has no scale, is right)"),
    "dk_wrong_scale": (dict(dk_factor="log2e"),
                       "dK is scaled by qk_scale = log2(e)/sqrt(D), which is for exp2; dK = softmax_scale * dS^T Q"),
    "dq_wrong_scale": (dict(dq_factor="log2e"),
                       "dQ is scaled by qk_scale = log2(e)/sqrt(D), which is for exp2; dQ = softmax_scale * dS K"),
    "dk_scale_twice": (dict(dk_factor="scale"), "dK carries the softmax scale twice; dK = softmax_scale * dS^T Q"),
    "dq_scale_twice": (dict(dq_factor="scale"), "dQ carries the softmax scale twice; dQ = softmax_scale * dS K"),
    "no_recompute_mask": (dict(recompute_mask=False),
                          "the causal mask is missing in the recompute of P: on the diagonal tiles keys after their "
                          "query get P = exp(s - lse) > 0, but the forward gave them probability 0 (P must be 0 where "
                          "key_idx > query_idx when ON_DIAGONAL)"),
}


def _factor(name, d):
    scale = 1.0 / math.sqrt(d)
    return {"1/scale": 1.0 / scale, "scale": scale, "log2e": math.log2(math.e)}[name]


# Largest B*H*L*L the re-enactment is tried on (several float64 L x L matrices): beyond, generic diagnosis.
_REENACT_LIMIT = 2 ** 24


def backward_diagnoses(fn):
    """`diagnoses=` for assert_grad_cases: this problem's mistakes re-enacted for `fn`'s tiles."""

    def diagnose(got, q, k, v, do, ref, case):
        b, h, n, d = q.shape
        if b * h * n * n > _REENACT_LIMIT:
            return []
        tol = GRAD_TOLERANCES[q.dtype]
        known = tile_sizes(fn, q, case.causal)
        parts = exact_parts(q, k, v, do, case.causal)
        for code, (switches, message) in MISTAKES.items():
            if code == "no_recompute_mask" and not case.causal:
                continue
            options = dict(switches)
            for key in ("dq_factor", "dk_factor"):
                if key in options:
                    options[key] = _factor(options[key], d)
            needs_tiles = code in ("no_recompute_mask", "delta_one_block")
            for tiles in ((known,) if known else _FALLBACK_TILES) if needs_tiles else ((32, 32, 16),):
                grads = reenact_backward(q, k, v, do, case.causal, tiles, parts=parts, **options)
                sim = dict(zip(("dq", "dk", "dv"), grads, strict=True))
                if all(explains(got[name], sim[name].to(got[name].device), ref[name], tol.atol, tol.rtol)
                       for name in ("dq", "dk", "dv")):
                    where = f" (the gradients match that mistake, with {tiles[0]}-key dK/dV tiles)" if needs_tiles \
                        else ""
                    return [Finding(code, message + where)]
        p = torch.exp(parts["s"] - parts["lse"][..., None])
        mask = attention_mask(n, case.causal, device=p.device)
        if mask is not None:
            p = p.masked_fill(~mask, 0.0)
        return wrong_delta(got, ref, p, parts["q"], parts["k"], 1.0 / math.sqrt(d), 1, tol,
                           delta=parts["row_delta"][..., 0])

    return [diagnose]


def assert_backward_cases(fn, cases, title="", **kwargs):
    """assert_grad_cases with this problem's mistakes re-enacted for a likely cause."""
    assert_grad_cases(fn, cases, title=title, diagnoses=backward_diagnoses(fn), **kwargs)


@SELF_CHECK
def check(fn):
    """Self-check with the visible shapes; raises CheckFailed with a likely cause when wrong."""
    assert_backward_cases(fn, SPEC.self_check_cases, title="Problem 7 self-check (dQ, dK, dV):")


assert SPEC.timing is not None  # the performance cell times against this plan
performance_points = performance.points_function(SPEC.assignment, SPEC.timing, SPEC.performance_points,
                                                gate=check, reference=reference_function)


# ---------------------------------------------------------------------------------------------
# The picture: which tiles each program of the two backward kernels visits.
# ---------------------------------------------------------------------------------------------

@FIGURE
def plot_backward_programs(seq_len=256, block_n1=64, block_m2=64, causal=True, key_block=1, query_block=2,
                           axes=None):
    """Two panels on the grader's own mask: the tiles one dK/dV program walks (a column of tiles: its
    keys, every query block that sees them) and the tiles one dQ program walks (a row: its queries,
    every key block they see). D = diagonal tile (masked), 1 = full tile (no mask)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..plots import plot_mask

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    plot_mask(seq_len, causal=causal, block_m=block_n1, block_n=block_n1, ax=axes[0])
    plot_mask(seq_len, causal=causal, block_m=block_m2, block_n=block_m2, ax=axes[1])
    k0, q0 = key_block * block_n1, query_block * block_m2
    for start in range(k0 if causal else 0, seq_len, block_n1):
        diagonal = causal and start == k0
        h = min(block_n1, seq_len - start)
        axes[0].add_patch(Rectangle((k0, start), block_n1, h, lw=2.5, alpha=0.35,
                                    color="#a50f15" if diagonal else "#08306b"))
        axes[0].text(k0 + block_n1 / 2, start + h / 2, "D" if diagonal else "1", ha="center", va="center",
                     fontsize=14, fontweight="bold", color="white")
    hi = min(q0 + block_m2, seq_len) if causal else seq_len
    for start in range(0, hi, block_m2):
        diagonal = causal and start == q0
        w = min(block_m2, seq_len - start)
        axes[1].add_patch(Rectangle((start, q0), w, block_m2, lw=2.5, alpha=0.35,
                                    color="#a50f15" if diagonal else "#08306b"))
        axes[1].text(start + w / 2, q0 + block_m2 / 2, "D" if diagonal else "1", ha="center", va="center",
                     fontsize=14, fontweight="bold", color="white")
    axes[0].set_title(f"dK/dV program of key block {key_block}:\nwalks down its column of tiles", fontsize=10)
    axes[1].set_title(f"dQ program of query block {query_block}:\nwalks along its row of tiles", fontsize=10)
    return axes


# ---------------------------------------------------------------------------------------------
# Timing: forward + backward and backward alone against SDPA's FlashAttention-2 backend.
# ---------------------------------------------------------------------------------------------

def backward_flops(b, h, n, d, causal=False) -> float:
    """2.5 times the forward's 4*B*H*L^2*D (five L x L x D matmuls against two), halved when causal."""
    flops = 2.5 * 4.0 * b * h * n * n * d
    return flops / 2 if causal else flops


def _sdpa(backend_name):
    """SDPA with one backend pinned (so the name in the table is the kernel that ran), causal or not."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def make(causal):
        def run(q, k, v):
            with sdpa_kernel(backend):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return run
    return make


def _time_pair(forward, q, k, v, do):
    """(forward + backward ms, backward ms): do_bench medians of a training step's attention."""
    import triton

    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))

    def step():
        o = forward(q, k, v)
        torch.autograd.grad(o, (q, k, v), do)
    o = forward(q, k, v)
    both = triton.testing.do_bench(step, warmup=100, rep=500, return_mode="median")
    backward = triton.testing.do_bench(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True),
                                       warmup=100, rep=500, return_mode="median")
    return both, backward


def benchmark(attention, lengths=(1024, 2048, 4096, 8192, 16384), head_dims=(64, 128), batch=4, heads=16,
              causal=(False, True), plot_path=None, json_path=None):
    """Time forward+backward and backward alone of `attention(q, k, v, causal)` (the notebook's
    `flash_attention`) against SDPA with the FLASH_ATTENTION backend pinned (and CUDNN_ATTENTION beside
    it), in bf16 where the GPU has it, with do_bench medians and TFLOPS (forward 4*B*H*L^2*D,
    backward 2.5 times that, both halved when causal). Prints a table; writes `json_path` (rows and
    environment) and `plot_path` when given. Under the CPU interpreter or while grading it says why it
    does nothing.
    """

    from .. import benchmark as bench

    reason = bench.kernel_skip_reason("compare your backward with PyTorch's")
    if reason:
        print(reason)
        return None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    impls = {"your kernels": lambda c: (lambda q, k, v: attention(q, k, v, c))}
    if "deterministic" in inspect.signature(attention).parameters:
        # The two kinds of program, which call all five functions (section 3 of the chapter).
        impls["your kernels, deterministic"] = lambda c: (lambda q, k, v: attention(q, k, v, c, deterministic=True))
    impls.update({"SDPA FLASH_ATTENTION": _sdpa("FLASH_ATTENTION"), "SDPA CUDNN_ATTENTION": _sdpa("CUDNN_ATTENTION")})
    rows = []
    for d in head_dims:
        for n in lengths:
            for is_causal in causal:
                torch.manual_seed(0)
                q, k, v, do = (torch.randn(batch, heads, n, d, device="cuda", dtype=dtype) for _ in range(4))
                fwd = bench.attention_flops(batch, heads, n, n, d, causal=is_causal)
                bwd = backward_flops(batch, heads, n, d, causal=is_causal)
                for name, make in impls.items():
                    row = {"impl": name, "B": batch, "H": heads, "L": n, "D": d, "causal": is_causal,
                           "dtype": str(dtype)[6:]}
                    try:
                        both, back = _time_pair(make(is_causal), q, k, v, do)
                        rows.append({**row, "fwd_bwd_ms": both, "bwd_ms": back,
                                     "fwd_bwd_tflops": (fwd + bwd) / (both * 1e-3) / 1e12,
                                     "bwd_tflops": bwd / (back * 1e-3) / 1e12})
                    except Exception as exc:  # an unsupported backend is a result, not a crash
                        rows.append({**row, "skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"})
                del q, k, v, do
                torch.cuda.empty_cache()
    print(f"{torch.cuda.get_device_name(0)}, {str(dtype)[6:]}, B={batch} H={heads}; do_bench medians; "
          "TFLOPS: forward 4*B*H*L^2*D, backward 2.5x that, halved when causal")
    print(format_table(rows))
    if json_path:
        bench.save(rows, json_path)
        print(f"wrote {json_path}")
    if plot_path:
        bench.plot_backward(rows, plot_path)
    return rows


def format_table(rows) -> str:
    """The benchmark's rows as a table, with each kernel's speed over SDPA flash's beside it."""
    lines = [f"{'impl':<29}{'D':>5}{'L':>7}{'causal':>8}{'fwd+bwd ms':>12}{'TFLOPS':>8}{'bwd ms':>10}"
             f"{'TFLOPS':>8}{'fwd+bwd vs flash':>18}{'bwd vs flash':>14}"]
    peer = {(r["D"], r["L"], r["causal"]): r for r in rows if r["impl"] == "SDPA FLASH_ATTENTION" and "bwd_ms" in r}
    for r in rows:
        head = f"{r['impl']:<29}{r['D']:>5}{r['L']:>7}{str(r['causal']):>8}"
        if "skipped" in r:
            lines.append(f"{head}  skipped: {r['skipped']}")
            continue
        other = peer.get((r["D"], r["L"], r["causal"])) if r["impl"] != "SDPA FLASH_ATTENTION" else None
        both = f"{other['fwd_bwd_ms'] / r['fwd_bwd_ms']:.2f}x" if other else ""
        ratio = f"{other['bwd_ms'] / r['bwd_ms']:.2f}x" if other else ""
        lines.append(f"{head}{r['fwd_bwd_ms']:>12.3f}{r['fwd_bwd_tflops']:>8.0f}{r['bwd_ms']:>10.3f}"
                     f"{r['bwd_tflops']:>8.0f}{both:>18}{ratio:>14}")
    return "\n".join(lines)
