"""Sweep the tiles of problem 7's reference backward on a GPU: for each candidate configuration,
the gradients against float64 autograd (max error in units of the dtype's tolerance) and the
backward's do_bench median, next to SDPA's FLASH_ATTENTION backward on the same inputs.

    python scripts/tune_backward.py OUTDIR [--dims 64 128] [--dtype float16] [--causal no yes]
                                           [--answer FILE ...] [--wide] [--tma no yes] [--length 4096]
                                           [--configs 64,64,64,64,4,3 ...]

A configuration is (BLOCK_M, BLOCK_N, forward warps, forward stages, BLOCK_M1, BLOCK_N1, BLOCK_M2, BLOCK_N2,
num_warps, num_stages), as the reference module's launch_config returns it; the wrappers take it as
`config=`. Only the backward's part is swept here (scripts/tune_forward.py sweeps the forward's).
`--answer FILE`: an answer cell of its own (the five functions a student writes) timed with the same
locked kernels, beside the reference's, on the same inputs in the same run. `--wide`: every
candidate of WIDE (tiles x warps x stages) instead of the short list. `--tma no yes`: each candidate
with the loops' tiles fetched through pointers and through tensor descriptors (Hopper), in turn.
`--configs`: these backward parts (BLOCK_M1,BLOCK_N1,BLOCK_M2,BLOCK_N2,num_warps,num_stages) at every D,
instead of the short list.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autograder.checks import GRAD_TOLERANCES  # noqa: E402
from autograder.kernel_module import import_kernel_module  # noqa: E402
from autograder.notebook_code import read  # noqa: E402
from autograder.problems import get_spec, reference_module, source_notebook_path  # noqa: E402
from autograder.references import attention_grads_reference  # noqa: E402

# The short list: backward parts (BLOCK_M1, BLOCK_N1, BLOCK_M2, BLOCK_N2, num_warps, num_stages); the
# forward's part (128, 64, 4, 3) only makes the o and lse the backward reads.
_SHORT = {64: [(32, 128, 128, 32, 4, 3), (64, 128, 128, 64, 8, 3), (32, 128, 128, 32, 8, 3), (64, 64, 64, 64, 4, 3),
               (32, 64, 64, 32, 4, 3)],
          128: [(32, 128, 128, 32, 8, 2), (32, 128, 128, 32, 4, 2), (64, 64, 64, 64, 4, 2), (32, 64, 64, 32, 4, 2),
                (64, 128, 128, 64, 8, 2), (32, 128, 128, 32, 8, 1), (64, 64, 64, 64, 8, 2)]}
CANDIDATES = {d: [(128, 64, 4, 3, *c) for c in cs] for d, cs in _SHORT.items()}

# (BLOCK_M1, BLOCK_N1, BLOCK_M2, BLOCK_N2) x num_warps x num_stages; the forward's part stays (128, 64, 4, 3).
WIDE_TILES = [(64, 64, 64, 64), (32, 128, 128, 32), (64, 128, 128, 64)]
WIDE = {64: [(128, 64, 4, 3, *t, w, s) for t in WIDE_TILES for w in (4, 8) for s in (2, 3, 4, 5)],
        128: [(128, 64, 4, 3, *t, w, s) for t in WIDE_TILES for w in (4, 8) for s in (1, 2, 3)]}


def error_units(module, config, shape, causal, dtype, tma=None) -> float:
    torch.manual_seed(0)
    q, k, v, do = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(4))
    o, lse = module.attention_forward(q, k, v, causal, config=config)
    got = module.attention_backward(q, k, v, o, lse, do, causal, config=config, tma=tma)
    want = attention_grads_reference(q.double(), k.double(), v.double(), do.double(), is_causal=causal)
    tol = GRAD_TOLERANCES[dtype]
    return max(((g.double() - w).abs() / (tol.atol + tol.rtol * w.abs())).max().item()
               for g, w in zip(got, want, strict=True))


def main() -> None:
    from triton.testing import do_bench

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    parser.add_argument("--causal", nargs="+", default=["no", "yes"], choices=["no", "yes"])
    parser.add_argument("--answer", nargs="*", default=[], help="answer cells to time beside the reference's")
    parser.add_argument("--wide", action="store_true", help="every candidate of WIDE")
    parser.add_argument("--length", type=int, default=4096, help="the timed sequence length (B=4, H=16)")
    parser.add_argument("--configs", nargs="+", default=[], help="backward parts to time instead of the short list")
    parser.add_argument("--tma", nargs="+", default=["auto"], choices=["auto", "no", "yes"],
                        help="the backward's loads: through descriptors (yes), pointers (no), or as the wrapper picks")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    spec = get_spec("problem7")
    modules = {"reference": reference_module("problem7", REPO)}
    for path in args.answer:
        modules[Path(path).stem] = import_kernel_module(spec, read(source_notebook_path(spec, REPO)),
                                                        answer=Path(path).read_text(), name=Path(path).stem)
    candidates = WIDE if args.wide else CANDIDATES
    if args.configs:
        chosen = [(128, 64, 4, 3, *map(int, c.split(","))) for c in args.configs]
        candidates = {dim: chosen for dim in args.dims}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    meta = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, dtype=args.dtype,
                triton=__import__("triton").__version__, command=" ".join(sys.argv))
    rows: list = []

    def save() -> None:  # after every candidate: a run cut short keeps what it measured
        (Path(args.out) / "tune_backward.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))

    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {args.dtype}; error in tolerance units "
          f"(<= 1 passes) at L=1000 and L=4096; time at B=4 H=16 L={args.length}")
    print(f"{'answer':<12} {'D':>4} {'causal':>6} {'tma':>4} {'config':<40} {'err':>6} {'bwd ms':>8} {'TFLOPS':>7} "
          f"{'flash ms':>8} {'x flash':>7}")
    for dim in args.dims:
        for causal in (c == "yes" for c in args.causal):
            shape = (4, 16, args.length, dim)
            torch.manual_seed(1)
            q, k, v, do = (torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True) for _ in range(4))
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
                out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
                flash_ms = do_bench(functools.partial(torch.autograd.grad, out, (q, k, v), do, retain_graph=True),
                                    return_mode="median")
            flops = 2.5 * 4 * math.prod(shape[:3]) * shape[2] * dim / (2 if causal else 1)
            runs = ((c, m, t) for c in candidates[dim] for m in modules.items() for t in args.tma)
            for config, (answer, module), tma_arg in runs:
                tma = dict(auto=None, no=False, yes=True)[tma_arg]
                try:
                    err = max(error_units(module, config, (1, 2, 1000, dim), causal, dtype, tma),
                              error_units(module, config, (1, 2, 4096, dim), causal, dtype, tma))
                    qd, kd, vd, dod = (t.detach() for t in (q, k, v, do))
                    o, lse = module.attention_forward(qd, kd, vd, causal, config=config)
                    ms = do_bench(functools.partial(module.attention_backward, qd, kd, vd, o, lse, dod, causal,
                                                    config=config, tma=tma), return_mode="median")
                except Exception as exc:  # a configuration that does not fit (shared memory) is reported
                    print(f"{answer:<12} {dim:>4} {causal!s:>6} {tma_arg:>4} {config!s:<40} failed: "
                          f"{type(exc).__name__}: {str(exc)[:80]}", flush=True)
                    rows.append(dict(answer=answer, dim=dim, causal=causal, tma=tma_arg, config=config,
                                     error=f"{type(exc).__name__}: {exc}"[:300]))
                    save()
                    continue
                row = dict(answer=answer, dim=dim, causal=causal, tma=tma_arg, config=config, error_units=err,
                           backward_ms=ms, tflops=flops / ms / 1e9, flash_ms=flash_ms, speedup_vs_flash=flash_ms / ms)
                rows.append(row)
                save()
                print(f"{answer:<12} {dim:>4} {causal!s:>6} {tma_arg:>4} {config!s:<40} {err:6.2f} {ms:8.3f} "
                      f"{row['tflops']:7.1f} {flash_ms:8.3f} {row['speedup_vs_flash']:6.2f}x", flush=True)


if __name__ == "__main__":
    main()
