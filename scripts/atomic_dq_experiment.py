"""One backward kernel with dQ added up by atomics, against problem 7's backward: an experiment for
the design of problem 7, not course code.

Problem 7's backward (the layout of Triton's tutorial) rebuilds P twice, once in the dK/dV programs
and again in the dQ programs: 7 matmuls and two exponentials per score. FlashAttention-2's CUDA
kernel and FlashAttention-3 compute dQ inside the dK/dV programs instead and add each program's part
into a float32 buffer: 5 matmuls and one exponential per score, paid for with L / BLOCK_N
read-modify-writes of every dQ row. This script times such a kernel, with the adds done as
per-element atomics (`tl.atomic_add`) or as bulk reductions of whole tiles by the TMA unit
(`desc.atomic_add`, Hopper), next to problem 7's reference backward and SDPA's FLASH_ATTENTION and
CUDNN_ATTENTION backward, on the same inputs in one run. Every candidate's gradients are first
checked against float64 autograd (in units of the course's tolerance; <= 1 passes).

    python scripts/atomic_dq_experiment.py OUTDIR [--dims 64 128] [--lengths 4096 16384]
    TRITON_INTERPRET=1 python scripts/atomic_dq_experiment.py --check   # the CPU interpreter: correctness only

Sequence lengths are multiples of the tiles and the inputs contiguous: no tail masks.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autograder.checks import GRAD_TOLERANCES  # noqa: E402
from autograder.problems import reference_module  # noqa: E402
from autograder.references import attention_grads_reference  # noqa: E402

LOG2_E = tl.constexpr(1.4426950408889634)
# (BLOCK_M queries per step, BLOCK_N keys per program, num_warps, num_stages)
CANDIDATES = {64: [(64, 64, 4, 3), (64, 128, 8, 3), (64, 128, 8, 2), (32, 128, 4, 3)],
              128: [(64, 64, 4, 2), (64, 128, 8, 2), (32, 128, 8, 2)]}


@triton.jit
def _delta_kernel(O, DO, DELTA, n_rows, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cols = tl.arange(0, HEAD_DIM)
    inside = rows[:, None] < n_rows
    o = tl.load(O + rows[:, None] * HEAD_DIM + cols[None, :], mask=inside, other=0.0).to(tl.float32)
    do = tl.load(DO + rows[:, None] * HEAD_DIM + cols[None, :], mask=inside, other=0.0).to(tl.float32)
    tl.store(DELTA + rows, tl.sum(o * do, axis=1), mask=rows < n_rows)


@triton.jit
def _step(dk, dv, k, v, desc_q, desc_do, desc_dq, DQ, LSE, DELTA, row0, off_b, off_h, start_m, offs_m, offs_n,
          offs_d, qk_scale, sm_scale, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, MASK: tl.constexpr,
          TMA_REDUCE: tl.constexpr):
    q = desc_q.load([off_b, off_h, start_m, 0]).reshape(BLOCK_M, HEAD_DIM)
    do = desc_do.load([off_b, off_h, start_m, 0]).reshape(BLOCK_M, HEAD_DIM)
    query_idx = start_m + offs_m
    lse = tl.load(LSE + row0 + query_idx)
    delta = tl.load(DELTA + row0 + query_idx)
    p_t = tl.math.exp2(tl.dot(k, tl.trans(q)) * qk_scale - (lse * LOG2_E)[None, :])    # P^T, keys by queries
    if MASK:
        p_t = tl.where(offs_n[:, None] <= query_idx[None, :], p_t, 0.0)
    dv = tl.dot(p_t.to(do.dtype), do, dv)
    ds_t = (p_t * (tl.dot(v, tl.trans(do)) - delta[None, :]) * sm_scale).to(q.dtype)   # scale dS^T
    dk = tl.dot(ds_t, q, dk)
    dq = tl.dot(tl.trans(ds_t), k)                                                      # this key block's part
    if TMA_REDUCE:
        desc_dq.atomic_add([off_b, off_h, start_m, 0], dq.reshape(1, 1, BLOCK_M, HEAD_DIM))
    else:
        tl.atomic_add(DQ + (row0 + query_idx)[:, None] * HEAD_DIM + offs_d[None, :], dq, sem="relaxed")
    return dk, dv


@triton.jit
def _backward_atomic_dq(desc_q, desc_do, desc_dq, K, V, DK, DV, DQ, LSE, DELTA, n_heads, seq_len, qk_scale, sm_scale,
                        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                        TMA_REDUCE: tl.constexpr):
    # One program owns BLOCK_N keys of one (batch, head): dK and dV as in problem 7, and each query
    # block's share of dQ added to the float32 buffer DQ.
    start_n = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = off_bh // n_heads
    off_h = off_bh % n_heads
    row0 = off_bh.to(tl.int64) * seq_len
    offs_n = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    kv_rows = (row0 + offs_n)[:, None] * HEAD_DIM + offs_d[None, :]
    k = tl.load(K + kv_rows)
    v = tl.load(V + kv_rows)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    lo = start_n * BLOCK_N if CAUSAL else 0
    mid = lo + BLOCK_N if CAUSAL else 0
    for start_m in range(lo, mid, BLOCK_M):           # the diagonal (causal only)
        dk, dv = _step(dk, dv, k, v, desc_q, desc_do, desc_dq, DQ, LSE, DELTA, row0, off_b, off_h, start_m, offs_m,
                       offs_n, offs_d, qk_scale, sm_scale, HEAD_DIM, BLOCK_M, MASK=True, TMA_REDUCE=TMA_REDUCE)
    for start_m in range(mid, seq_len, BLOCK_M):
        dk, dv = _step(dk, dv, k, v, desc_q, desc_do, desc_dq, DQ, LSE, DELTA, row0, off_b, off_h, start_m, offs_m,
                       offs_n, offs_d, qk_scale, sm_scale, HEAD_DIM, BLOCK_M, MASK=False, TMA_REDUCE=TMA_REDUCE)
    tl.store(DK + kv_rows, dk.to(DK.dtype.element_ty))
    tl.store(DV + kv_rows, dv.to(DV.dtype.element_ty))


def backward_atomic_dq(q, k, v, o, lse, do, causal, config, tma_reduce):
    """(dq, dk, dv) of attention, contiguous (B, H, L, D) inputs with L a multiple of the tiles."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    batch, n_heads, seq_len, head_dim = q.shape
    block_m, block_n, num_warps, num_stages = config
    delta = torch.empty((batch, n_heads, seq_len), device=q.device, dtype=torch.float32)
    _delta_kernel[(triton.cdiv(batch * n_heads * seq_len, 64),)](o, do, delta, batch * n_heads * seq_len,
                                                                  HEAD_DIM=head_dim, BLOCK=64)
    dq32 = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
    dk, dv = torch.empty_like(k), torch.empty_like(v)

    def desc(t):
        return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, block_m, head_dim])

    sm_scale = 1.0 / math.sqrt(head_dim)
    _backward_atomic_dq[(seq_len // block_n, batch * n_heads)](
        desc(q), desc(do), desc(dq32), k, v, dk, dv, dq32, lse, delta, n_heads, seq_len, sm_scale * LOG2_E.value,
        sm_scale,
        HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal, TMA_REDUCE=tma_reduce,
        num_warps=num_warps, num_stages=num_stages)
    return dq32.to(q.dtype), dk, dv


def error_units(module, config, tma_reduce, shape, causal, dtype, device) -> float:
    torch.manual_seed(0)
    q, k, v, do = (torch.randn(shape, device=device, dtype=dtype) for _ in range(4))
    o, lse = module.attention_forward(q, k, v, causal)
    got = backward_atomic_dq(q, k, v, o, lse, do, causal, config, tma_reduce)
    want = attention_grads_reference(q.double(), k.double(), v.double(), do.double(), is_causal=causal)
    tol = GRAD_TOLERANCES[dtype]
    return max(((g.double() - w).abs() / (tol.atol + tol.rtol * w.abs())).max().item()
               for g, w in zip(got, want, strict=True))


def check_on_the_interpreter(module) -> None:
    """The per-element atomics variant against float64 on the CPU (the interpreter has no TMA reduce)."""
    for causal in (False, True):
        err = error_units(module, (16, 32, 4, 1), False, (1, 2, 64, 32), causal, torch.float16, "cpu")
        print(f"interpreter, causal={causal}: {err:.3f} tolerance units")
        assert err <= 1, err


def main() -> None:
    from triton.testing import do_bench

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?")
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--check", action="store_true", help="correctness only, on the CPU interpreter")
    args = parser.parse_args()
    module = reference_module("problem7", REPO)
    if args.check:
        check_on_the_interpreter(module)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.bfloat16
    meta = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
                dtype="bfloat16", command=" ".join(sys.argv))
    rows: list = []
    print(f"{meta['gpu']}, torch {torch.__version__}, triton {triton.__version__}, bf16, B=4 H=16; backward ms "
          "(do_bench medians); err: tolerance units at L=1024 and 4096 (<= 1 passes)")
    print(f"{'impl':<34} {'D':>4} {'L':>6} {'causal':>6} {'err':>6} {'bwd ms':>8} {'TFLOPS':>7} {'x flash':>7}")
    for dim in args.dims:
        for seq_len in args.lengths:
            for causal in (False, True):
                shape = (4, 16, seq_len, dim)
                torch.manual_seed(1)
                q, k, v, do = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(4))
                o, lse = module.attention_forward(q, k, v, causal)
                flops = 2.5 * 4 * 4 * 16 * seq_len ** 2 * dim / (2 if causal else 1)
                timed = {"problem 7 reference": (functools.partial(module.attention_backward, q, k, v, o, lse, do,
                                                                   causal), None)}
                for backend in ("FLASH_ATTENTION", "CUDNN_ATTENTION"):
                    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
                    with torch.nn.attention.sdpa_kernel(getattr(torch.nn.attention.SDPBackend, backend)):
                        out_ = torch.nn.functional.scaled_dot_product_attention(qg, kg, vg, is_causal=causal)
                    timed[f"SDPA {backend}"] = (functools.partial(torch.autograd.grad, out_, (qg, kg, vg), do,
                                                                  retain_graph=True), None)
                for config in CANDIDATES[dim]:
                    for tma_reduce in (False, True):
                        name = f"atomic dQ {'tma' if tma_reduce else 'elem'} {config}"
                        try:
                            err = max(error_units(module, config, tma_reduce, (1, 2, n, dim), causal, dtype, "cuda")
                                      for n in (1024, 4096))
                        except Exception as exc:  # a tile that does not compile or fit is reported, not fatal
                            print(f"{name:<34} {dim:>4} {seq_len:>6} {causal!s:>6} failed: {type(exc).__name__}: "
                                  f"{str(exc)[:100]}", flush=True)
                            rows.append(dict(impl=name, D=dim, L=seq_len, causal=causal, error=str(exc)[:300]))
                            continue
                        timed[name] = (functools.partial(backward_atomic_dq, q, k, v, o, lse, do, causal, config,
                                                         tma_reduce), err)
                results = {name: (do_bench(fn, return_mode="median"), err) for name, (fn, err) in timed.items()}
                flash_ms = results["SDPA FLASH_ATTENTION"][0]
                for name, (ms, err) in results.items():
                    row = dict(impl=name, D=dim, L=seq_len, causal=causal, backward_ms=ms, tflops=flops / ms / 1e9,
                               speedup_vs_flash=flash_ms / ms, error_units=err)
                    rows.append(row)
                    err_text = "" if err is None else f"{err:.2f}"
                    print(f"{name:<34} {dim:>4} {seq_len:>6} {causal!s:>6} {err_text:>6} {ms:8.3f} "
                          f"{row['tflops']:7.1f} {row['speedup_vs_flash']:6.2f}x", flush=True)
                (out / "atomic_dq.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))


if __name__ == "__main__":
    main()
