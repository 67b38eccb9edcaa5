"""Sweep the forward tiles of problem 7's reference kernels on a GPU at the short sequences of
training (GPT-2 small: B=16, H=12, L=1024, D=64, causal): for each candidate (BLOCK_M, BLOCK_N,
num_warps, num_stages) the output's error against float64 (in units of the dtype's tolerance) and
the forward's do_bench median, next to SDPA's FLASH_ATTENTION forward on the same inputs; and what
the differentiable function adds around the kernel (`flash_attention` against `attention_forward`).

    python scripts/tune_forward.py OUTDIR [--shape 16 12 1024 64] [--dtype bfloat16] [--causal no]
                                          [--tma no yes]

`--tma no yes`: each candidate through pointers and through tensor descriptors (Hopper), in turn.

The backward's tiles stay launch_config's: a candidate replaces only the forward's.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autograder.checks import TOLERANCES  # noqa: E402
from autograder.problems import reference_module  # noqa: E402
from autograder.references import attention_reference  # noqa: E402

FORWARD_CANDIDATES = [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (64, 128, 4, 3),
                      (64, 64, 4, 4), (128, 32, 4, 4), (64, 32, 4, 4), (128, 64, 8, 4), (128, 128, 8, 2),
                      (128, 128, 4, 3), (128, 128, 4, 2)]


def main() -> None:
    from triton.testing import do_bench

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--shape", type=int, nargs=4, default=[16, 12, 1024, 64], metavar=("B", "H", "L", "D"))
    parser.add_argument("--dtype", default="bfloat16", choices=["float16", "bfloat16"])
    parser.add_argument("--causal", default="yes", choices=["no", "yes"])
    parser.add_argument("--tma", nargs="+", default=["auto"], choices=["auto", "no", "yes"],
                        help="the forward's loads: through descriptors (yes), pointers (no), or as the wrapper picks")
    args = parser.parse_args()
    dtype, shape, causal = getattr(torch, args.dtype), tuple(args.shape), args.causal == "yes"
    module = reference_module("problem7", REPO)
    base = module.launch_config(torch.empty(1, 1, 1, shape[3], device="cuda", dtype=dtype), causal)
    torch.manual_seed(0)
    q, k, v = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(3))
    want, _ = attention_reference(q[:1, :2].double(), k[:1, :2].double(), v[:1, :2].double(), is_causal=causal)
    tol = TOLERANCES[dtype]
    flops = 4 * shape[0] * shape[1] * shape[2] ** 2 * shape[3] / (2 if causal else 1)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
        flash_ms = do_bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal),
                            return_mode="median")
    whole_ms = do_bench(lambda: module.flash_attention(q, k, v, causal), return_mode="median")
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {args.dtype}, shape {shape}, causal={causal}; "
          f"SDPA flash forward {flash_ms:.3f} ms; flash_attention (autograd function, chosen tiles) {whole_ms:.3f} ms")
    print(f"{'config':<22} {'tma':>4} {'err':>6} {'fwd ms':>8} {'TFLOPS':>7} {'x flash':>7}")
    rows = []
    for tiles, tma_arg in ((t, m) for t in FORWARD_CANDIDATES for m in args.tma):
        config, tma = (*tiles, *base[4:]), dict(auto=None, no=False, yes=True)[tma_arg]
        try:
            o, _ = module.attention_forward(q, k, v, causal, config=config, tma=tma)
            err = ((o[:1, :2].double() - want).abs() / (tol.atol + tol.rtol * want.abs())).max().item()
            ms = do_bench(functools.partial(module.attention_forward, q, k, v, causal, config=config, tma=tma),
                          return_mode="median")
        except Exception as exc:  # a configuration that does not fit (shared memory) is reported
            print(f"{tiles!s:<22} {tma_arg:>4} failed: {type(exc).__name__}: {str(exc)[:80]}")
            rows.append(dict(tiles=tiles, tma=tma_arg, error=f"{type(exc).__name__}: {exc}"[:300]))
            continue
        row = dict(tiles=tiles, tma=tma_arg, chosen=tiles == tuple(base[:4]), error_units=err, forward_ms=ms,
                   tflops=flops / ms / 1e9, flash_ms=flash_ms, speedup_vs_flash=flash_ms / ms)
        rows.append(row)
        print(f"{tiles!s:<22} {tma_arg:>4} {err:6.2f} {ms:8.3f} {row['tflops']:7.1f} {row['speedup_vs_flash']:6.2f}x"
              + ("  (chosen now)" if row["chosen"] else ""))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    meta = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, dtype=args.dtype, shape=shape,
                triton=__import__("triton").__version__, causal=causal, flash_forward_ms=flash_ms,
                flash_attention_ms=whole_ms)
    (Path(args.out) / "tune_forward.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))


if __name__ == "__main__":
    main()
