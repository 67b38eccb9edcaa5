"""Measure the error of problem 8's backward (GQA + window + sinks), to check that problem 7's
gradient tolerances carry over.

    python scripts/backward_tolerances_window.py OUTDIR [--kernel] [--lengths 256 2048]

For float16 and bfloat16, head dims 16-128, lengths, and (group size, window, sinks) settings, it
reports for dQ, dK, dV the smallest atol = rtol the gradients pass against float64 autograd of the
reference attention (max |g - ref| / (1 + |ref|)), in units of the dtype's unit roundoff u.

Two sources, as for problem 7 (scripts/backward_tolerances.py):
- `emulated`: the kernels' arithmetic in float32 PyTorch, rounding where they round (the forward's P
  and O; the backward's P before P^T dO, scale * dS before dS^T Q and dS K; each gradient once at its
  store). A K/V head's dK and dV add the group's query heads in the float32 accumulator, as the dK/dV
  program does, and are rounded once.
- `kernel` (--kernel): the reference kernels of solutions/problem8, on this runtime (on the CPU
  interpreter: float16, at the kernel lengths given).

Writes OUTDIR/backward_tolerances_window.json and prints the worst case per source and dtype.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from backward_tolerances import UNIT, worst  # noqa: E402

# (group size Hq/Hkv, window, sinks): one head per K/V head; a group of 4 with a long window; a group
# of 8 whose 64 sinks every query sees (their dK/dV rows sum 8 L terms, the most of any setting).
SETTINGS = ((1, 64, 4), (4, 256, 4), (8, 128, 64))


def emulated_grads(q, k, v, do, window, sink):
    """(dq, dk, dv) with the kernels' rounding, float32 arithmetic (see module doc)."""
    import torch

    from autograder.references import create_mask_bool, repeat_kv

    dtype = q.dtype

    def rnd(x):
        return x.to(dtype).float()

    group = q.shape[1] // k.shape[1]
    qf, dof = q.float(), do.float()
    kf, vf = repeat_kv(k.float(), group), repeat_kv(v.float(), group)
    n, d = q.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(d)
    s = ((qf @ kf.transpose(-1, -2)) * scale).masked_fill(~create_mask_bool(n, window, sink), float("-inf"))
    m = s.amax(-1, keepdim=True)
    p_fwd = torch.exp(s - m)
    lsum = p_fwd.sum(-1, keepdim=True)
    o = ((rnd(p_fwd) @ vf) / lsum).to(dtype).float()       # the forward stores O in the input dtype
    lse = (m + torch.log(lsum)).squeeze(-1)
    delta = (o * dof).sum(-1, keepdim=True)
    p = torch.exp(s - lse[..., None])                       # hidden scores are -inf: P = 0
    dv_h = rnd(p).transpose(-1, -2) @ dof
    ds = rnd(p * (dof @ vf.transpose(-1, -2) - delta) * scale)
    dk_h = ds.transpose(-1, -2) @ qf
    dq = ds @ kf
    dk, dv = (g.unflatten(1, (-1, group)).sum(2) for g in (dk_h, dv_h))  # the group sum, in float32
    return tuple(g.to(dtype) for g in (dq, dk, dv))


def measure(source, fn, dtypes, dims, lengths, device, settings=SETTINGS, heads=8):
    import torch

    from autograder.inputs import Case, make_grad, make_qkv
    from autograder.references import attention_grads_reference

    rows = []
    for dtype in dtypes:
        for d in dims:
            for n in lengths:
                for group, window, sink in settings:
                    case = Case(1, heads, n, d, dtype, H_kv=heads // group, window=window, sink=sink, seed=n + d)
                    q, k, v = make_qkv(case, device)
                    do = make_grad(case, device)
                    with torch.no_grad():
                        got = fn(q, k, v, do, window, sink)
                    ref = attention_grads_reference(q, k, v, do, **case.mask_kwargs)
                    errors = {name: worst(g, r) for name, g, r in zip(("dq", "dk", "dv"), got, ref, strict=True)}
                    rows.append({"source": source, "dtype": dtype, "D": d, "L": n, "group": group, "W": window,
                                 "S": sink, **errors, "units": max(errors.values()) / UNIT[dtype]})
                    print(f"{source:9} {dtype:9} D={d:<4} L={n:<5} G={group} W={window:<4} S={sink:<3} "
                          + "  ".join(f"{k}={e:.2e}" for k, e in errors.items())
                          + f"  = {rows[-1]['units']:.1f} u", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--kernel", action="store_true", help="also measure the reference kernels here")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--kernel-lengths", type=int, nargs="+", default=None,
                        help="lengths for the kernels (default: --lengths)")
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 64, 128])
    args = parser.parse_args(argv)

    from autograder import device

    runtime = device.configure(verbose=False)
    import torch

    from autograder.checks import GRAD_TOLERANCES
    from autograder.inputs import DTYPES

    torch.manual_seed(0)
    rows = measure("emulated", emulated_grads, ["float16", "bfloat16"], args.dims, args.lengths,
                   "cpu" if runtime.interpreter else "cuda")
    if args.kernel:
        from autograder.problems import reference_module

        module = reference_module("problem8", REPO)

        def kernel(q, k, v, do, window, sink):
            return module.flash_attention_grads(q, k, v, do, window_size=window, sink_size=sink)
        dtypes = [str(t).replace("torch.", "") for t in runtime.dtypes]
        rows += measure("kernel", kernel, dtypes, args.dims, args.kernel_lengths or args.lengths, runtime.device)
    print()
    print(f"{'source':10}{'dtype':10}{'worst atol=rtol':>17}{'units of u':>12}{'tolerance':>11}{'margin':>8}")
    for source in dict.fromkeys(r["source"] for r in rows):
        for dtype in dict.fromkeys(r["dtype"] for r in rows if r["source"] == source):
            top = max((r for r in rows if r["source"] == source and r["dtype"] == dtype), key=lambda r: r["units"])
            tol = GRAD_TOLERANCES[DTYPES[dtype]].atol
            err = top["units"] * UNIT[dtype]
            print(f"{source:10}{dtype:10}{err:>17.2e}{top['units']:>12.1f}{tol:>11g}{tol / err:>7.1f}x"
                  f"   (worst: D={top['D']} L={top['L']} G={top['group']} W={top['W']} S={top['S']})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "backward_tolerances_window.json").write_text(
        json.dumps({"runtime": runtime.describe(), "rows": rows}, indent=1))
    print(f"wrote {out / 'backward_tolerances_window.json'}")


if __name__ == "__main__":
    main()
