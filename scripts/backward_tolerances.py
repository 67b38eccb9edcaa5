"""Measure the error of problem 7's backward, to set and check the gradient tolerances.

    python scripts/backward_tolerances.py OUTDIR [--kernel] [--lengths 64 256 1024 2048]

For every dtype (float16, bfloat16, float32), head dim (16-128), length and mask, and each of dQ,
dK, dV, it reports the smallest tolerance atol = rtol that the gradients pass against float64
autograd of the reference attention (max |g - ref| / (1 + |ref|)), in units of the dtype's unit
roundoff u (float16 2**-11, bfloat16 2**-8, float32 as TF32 on a GPU: 2**-11).

Two sources:
- `emulated` (any machine): the kernels' arithmetic in float32 PyTorch, rounding where the kernels
  round: the forward's P and O, the backward's P before P^T dO and scale * dS before dS^T Q and
  dS K, every gradient once at the store; operands of a float32 tl.dot to TF32. It lets long
  sequences and bfloat16 be measured on a CPU (whose Triton interpreter gets bfloat16 tl.dot wrong).
- `kernel` (--kernel): the reference kernels of solutions/problem7 themselves, on this runtime (on
  the CPU interpreter: float16 and float32 only, at the lengths given).

Writes OUTDIR/backward_tolerances.json and prints a table of the worst case per dtype.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

UNIT = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8, "float32": 2.0 ** -11}


def tf32(x):
    """Round float32 to TF32 (10 mantissa bits, round to nearest), as a GPU tl.dot of float32 does."""
    import torch

    bits = x.contiguous().view(torch.int32)
    rounded = (bits + 0x1000) & ~0x1FFF
    return rounded.view(torch.float32)


def emulated_grads(q, k, v, do, causal):
    """(dq, dk, dv) with the kernels' rounding, float32 arithmetic (see module doc)."""
    import torch

    dtype = q.dtype
    if dtype == torch.float32:
        def rnd(x):
            return tf32(x)
    else:
        def rnd(x):
            return x.to(dtype).float()

    qf, kf, vf, dof = (rnd(t.float()) for t in (q, k, v, do))
    n, d = q.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(d)
    s = (qf @ kf.transpose(-1, -2)) * scale
    if causal:
        mask = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        s = s.masked_fill(~mask, float("-inf"))
    m = s.amax(-1, keepdim=True)
    p_fwd = torch.exp(s - m)
    lsum = p_fwd.sum(-1, keepdim=True)
    o = ((rnd(p_fwd) @ vf) / lsum).to(dtype).float()       # the forward stores O in the input dtype
    lse = (m + torch.log(lsum)).squeeze(-1)
    delta = (o * do.float()).sum(-1, keepdim=True)
    p = torch.exp(s - lse[..., None])                       # masked scores are -inf: P = 0
    dv = rnd(p).transpose(-1, -2) @ dof
    dp = dof @ vf.transpose(-1, -2)
    ds = rnd(p * (dp - delta) * scale)
    dk = ds.transpose(-1, -2) @ qf
    dq = ds @ kf
    return tuple(g.to(dtype) for g in (dq, dk, dv))


def worst(got, ref):
    """max |g - ref| / (1 + |ref|): the smallest atol = rtol that `got` passes."""
    return float(((got.double() - ref).abs() / (1 + ref.abs())).max())


def measure(source, fn, dtypes, dims, lengths, device, batch=1, heads=2):
    import torch

    from autograder.inputs import Case, make_grad, make_qkv
    from autograder.references import attention_grads_reference

    rows = []
    for dtype in dtypes:
        for d in dims:
            for n in lengths:
                for causal in (False, True):
                    case = Case(batch, heads, n, d, dtype, seed=n + d, causal=causal)
                    q, k, v = make_qkv(case, device)
                    do = make_grad(case, device)
                    with torch.no_grad():
                        got = fn(q, k, v, do, causal)
                    ref = attention_grads_reference(q, k, v, do, is_causal=causal)
                    errors = {name: worst(g, r) for name, g, r in zip(("dq", "dk", "dv"), got, ref, strict=True)}
                    rows.append({"source": source, "dtype": dtype, "D": d, "L": n, "causal": causal,
                                 **errors, "units": max(errors.values()) / UNIT[dtype]})
                    print(f"{source:9} {dtype:9} D={d:<4} L={n:<5} causal={causal!s:5} "
                          + "  ".join(f"{k}={e:.2e}" for k, e in errors.items())
                          + f"  = {rows[-1]['units']:.1f} u", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--kernel", action="store_true", help="also measure the reference kernels here")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024, 2048])
    parser.add_argument("--kernel-lengths", type=int, nargs="+", default=None,
                        help="lengths for the kernels (default: --lengths)")
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 32, 64, 128])
    args = parser.parse_args(argv)

    from autograder import device

    runtime = device.configure(verbose=False)
    import torch

    from autograder.checks import GRAD_TOLERANCES
    from autograder.inputs import DTYPES

    torch.manual_seed(0)
    rows = measure("emulated", emulated_grads, ["float16", "bfloat16", "float32"], args.dims, args.lengths,
                   "cpu" if runtime.interpreter else "cuda")
    if args.kernel:
        from autograder.problems import reference_module

        module = reference_module("problem7", REPO)

        def kernel(q, k, v, do, causal):
            return module.flash_attention_grads(q, k, v, do, causal=causal)
        dtypes = [str(t).replace("torch.", "") for t in runtime.dtypes] + ["float32"]
        rows += measure("kernel", kernel, dtypes, args.dims, args.kernel_lengths or args.lengths, runtime.device)
    print()
    print(f"{'source':10}{'dtype':10}{'worst atol=rtol':>17}{'units of u':>12}{'tolerance':>11}{'margin':>8}")
    for source in dict.fromkeys(r["source"] for r in rows):
        for dtype in dict.fromkeys(r["dtype"] for r in rows if r["source"] == source):
            picked = [r for r in rows if r["source"] == source and r["dtype"] == dtype]
            top = max(picked, key=lambda r: r["units"])
            tol = GRAD_TOLERANCES[DTYPES[dtype]].atol
            err = top["units"] * UNIT[dtype]
            print(f"{source:10}{dtype:10}{err:>17.2e}{top['units']:>12.1f}{tol:>11g}{tol / err:>7.1f}x"
                  f"   (worst: D={top['D']} L={top['L']} causal={top['causal']})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "backward_tolerances.json").write_text(json.dumps({"runtime": runtime.describe(), "rows": rows}, indent=1))
    print(f"wrote {out / 'backward_tolerances.json'}")


if __name__ == "__main__":
    main()
