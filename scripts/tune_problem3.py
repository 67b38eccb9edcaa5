"""Sweep launch configurations of problem 3's reference kernel on this GPU, next to PyTorch's
SDPA (FLASH_ATTENTION and CUDNN_ATTENTION backends pinned), all timed in one run.

    python scripts/tune_problem3.py --out build/tune

Both of the notebook's own kernels are timed: the plain-pointer one and, on GPUs with TMA
(compute capability 9.0+), the one fed by tensor descriptors. Nothing is copied here, so what is
tuned is exactly what students study and what the wrapper launches.
Writes tune.json (every config's median ms and TFLOPS per shape) and prints the best per shape.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autograder import benchmark as bench  # noqa: E402
from autograder.problems import problem3  # noqa: E402

ref = problem3.reference_module(REPO)

def run_pointer(q, k, v, bm, bn, warps, stages):
    b, h, lq, d = q.shape
    o = torch.empty_like(q)
    lse = torch.empty((b, h, lq), device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(lq, bm), b * h)
    ref._flash_attention_forward_kernel[grid](
        q, k, v, o, lse, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        h, lq, k.shape[2], ref.LOG2_E / math.sqrt(d),
        HEAD_DIM=d, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages)
    return o, lse


def run_tma(q, k, v, bm, bn, warps, stages):
    b, h, lq, d = q.shape
    o = torch.empty_like(q)
    lse = torch.empty((b, h, lq), device=q.device, dtype=torch.float32)

    def desc(t, rows):
        return ref.TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, rows, d])
    grid = (triton.cdiv(lq, bm), b * h)
    ref._flash_attention_forward_kernel_tma[grid](
        desc(q, bm), desc(k, bn), desc(v, bn), desc(o, bm), lse, h, lq, k.shape[2], ref.LOG2_E / math.sqrt(d),
        HEAD_DIM=d, BLOCK_M=bm, BLOCK_N=bn, OUT_DTYPE=tl.bfloat16 if q.dtype == torch.bfloat16 else tl.float16,
        num_warps=warps, num_stages=stages)
    return o, lse


def configs():
    for bm, bn, warps, stages in itertools.product((64, 128), (32, 64, 128), (4, 8), (2, 3, 4)):
        if bm == 64 and warps == 8:
            continue
        yield bm, bn, warps, stages


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(REPO / "build" / "tune"))
    parser.add_argument("--shapes", default="4,16,4096,16;1,16,4096,16;4,16,4096,64;4,16,16384,64;"
                                            "4,16,4096,128;4,16,16384,128")
    parser.add_argument("--rep", type=int, default=200)
    parser.add_argument("--bodies", default="", help="comma-separated subset of pointer,tma")
    args = parser.parse_args()
    shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";")]
    bodies = {"pointer": run_pointer}
    if ref.TensorDescriptor is not None and torch.cuda.get_device_capability()[0] >= 9:
        bodies["tma"] = run_tma
    if args.bodies:
        bodies = {k: v for k, v in bodies.items() if k in args.bodies.split(",")}
    rows = []
    for b, h, n, d in shapes:
        torch.manual_seed(0)
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        expect = torch.nn.functional.scaled_dot_product_attention(q, k, v).float()
        flops = bench.attention_flops(b, h, n, n, d)
        for name, fn in bench.peers().items():
            if name.startswith("naive"):
                continue
            ms = triton.testing.do_bench(lambda: fn(q, k, v), warmup=50, rep=args.rep, return_mode="median")
            rows.append({"impl": name, "shape": [b, h, n, d], "ms": ms, "tflops": flops / ms / 1e9})
        for body, run in bodies.items():
            for cfg in configs():
                try:
                    o, _ = run(q, k, v, *cfg)
                    err = (o.float() - expect).abs().max().item()
                    if err > 0.05:
                        raise AssertionError(f"wrong output (max err {err:.3g})")
                    ms = triton.testing.do_bench(lambda: run(q, k, v, *cfg), warmup=50, rep=args.rep,
                                                 return_mode="median")
                    rows.append({"impl": body, "config": cfg, "shape": [b, h, n, d], "ms": ms,
                                 "tflops": flops / ms / 1e9})
                except Exception as exc:  # out of shared memory etc.: a result, not a crash
                    rows.append({"impl": body, "config": cfg, "shape": [b, h, n, d],
                                 "error": f"{type(exc).__name__}: {str(exc)[:100]}"})
        same = [r for r in rows if r["shape"] == [b, h, n, d] and "tflops" in r]
        line = f"B={b} H={h} L={n} D={d}: " + ", ".join(
            f"{r['impl']} {r['tflops']:.0f}" for r in same if "config" not in r)
        for body in bodies:
            best = max((r for r in same if r["impl"] == body), key=lambda r: r["tflops"], default=None)
            if best:
                line += f" | best {body} {best['config']} {best['tflops']:.0f}"
        print(line, flush=True)
        out = Path(args.out)  # written after every shape, so a cut-off run keeps what it measured
        out.mkdir(parents=True, exist_ok=True)
        (out / "tune.json").write_text(json.dumps({"environment": bench.environment(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
