"""Problem 7's two backwards side by side on a GPU: the two kinds of program (dK/dV per key block, dQ
per query block; deterministic) and the one kernel that adds dQ up by atomics (`dq_atomics=True`),
next to SDPA's FLASH_ATTENTION and CUDNN_ATTENTION, on the same inputs in one run.

    python scripts/compare_dq_atomics.py OUTDIR [--dims 64 128] [--lengths 4096 8192 16384]
                                                [--batch 4] [--heads 16] [--tma auto]

For each shape: each backward's gradients against float64 autograd at L=1000 (in units of the
course's tolerance; <= 1 passes), then do_bench medians of the backward alone (attention_backward,
or torch.autograd.grad of SDPA) and of forward+backward through autograd (flash_attention, its
backward forced to each path). `--tma no` times the pointer kernels (the per-element atomics; what a
short training step would take). Writes compare.json and prints a table.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autograder.checks import GRAD_TOLERANCES  # noqa: E402
from autograder.problems import reference_module  # noqa: E402
from autograder.references import attention_grads_reference  # noqa: E402

BACKENDS = ("FLASH_ATTENTION", "CUDNN_ATTENTION")
TWO, ATOMICS = "two kinds (determ.)", "dQ by atomics"


def error_units(module, dim, causal, dtype, tma, dq_atomics) -> float:
    torch.manual_seed(0)
    q, k, v, do = (torch.randn((1, 2, 1000, dim), device="cuda", dtype=dtype) for _ in range(4))
    o, lse = module.attention_forward(q, k, v, causal, tma=tma)
    got = module.attention_backward(q, k, v, o, lse, do, causal, tma=tma, dq_atomics=dq_atomics)
    want = attention_grads_reference(q.double(), k.double(), v.double(), do.double(), is_causal=causal)
    tol = GRAD_TOLERANCES[dtype]
    return max(((g.double() - w).abs() / (tol.atol + tol.rtol * w.abs())).max().item()
               for g, w in zip(got, want, strict=True))


def _sdpa(q, k, v, do, causal, backend):
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
    with torch.nn.attention.sdpa_kernel(getattr(torch.nn.attention.SDPBackend, backend)):
        out = torch.nn.functional.scaled_dot_product_attention(qg, kg, vg, is_causal=causal)

    def both():
        with torch.nn.attention.sdpa_kernel(getattr(torch.nn.attention.SDPBackend, backend)):
            o = torch.nn.functional.scaled_dot_product_attention(qg, kg, vg, is_causal=causal)
        torch.autograd.grad(o, (qg, kg, vg), do)
    return functools.partial(torch.autograd.grad, out, (qg, kg, vg), do, retain_graph=True), both


@contextlib.contextmanager
def _path(module, tma, dq_atomics):
    """The autograd function's backward forced to one path (and to pointers when tma is False)."""
    saved = module._tma, module._dq_atomics
    if tma is not None:
        module._tma = lambda *args: tma
    module._dq_atomics = lambda *args: dq_atomics
    try:
        yield
    finally:
        module._tma, module._dq_atomics = saved


def _ours(module, q, k, v, do, causal, tma, dq_atomics):
    o, lse = module.attention_forward(q, k, v, causal, tma=tma)
    backward = functools.partial(module.attention_backward, q, k, v, o, lse, do, causal, tma=tma,
                                 dq_atomics=dq_atomics)
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))

    def both():
        with _path(module, tma, dq_atomics):
            torch.autograd.grad(module.flash_attention(qg, kg, vg, causal), (qg, kg, vg), do)
    return backward, both


def main() -> None:
    import triton
    from triton.testing import do_bench

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--causal", choices=("no", "yes"), nargs="+", default=["no", "yes"])
    parser.add_argument("--tma", choices=("auto", "no"), default="auto",
                        help="auto: descriptors where the wrapper takes them; no: the pointer kernels")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    module = reference_module("problem7", REPO)
    dtype = torch.bfloat16
    tma = None if args.tma == "auto" else False
    meta = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
                dtype="bfloat16", command=" ".join(sys.argv))
    print(f"{meta['gpu']}, torch {torch.__version__}, triton {triton.__version__}, bf16, B={args.batch} "
          f"H={args.heads}, tma={args.tma}; do_bench medians; x flash: SDPA flash's time over this one's; "
          "err: tolerance units at L=1000 (<= 1 passes)")
    print(f"{'impl':<22} {'D':>4} {'L':>6} {'causal':>6} {'err':>5} {'bwd ms':>8} {'x flash':>7} "
          f"{'fwd+bwd ms':>10} {'x flash':>7}")
    rows = []
    for dim in args.dims:
        errors = {(atomics, causal): error_units(module, dim, causal, dtype, tma, atomics)
                  for atomics in (False, True) for causal in (False, True)}
        for seq_len in args.lengths:
            for causal in (c == "yes" for c in args.causal):
                torch.manual_seed(1)
                shape = (args.batch, args.heads, seq_len, dim)
                q, k, v, do = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(4))
                timed = {TWO: _ours(module, q, k, v, do, causal, tma, False),
                         ATOMICS: _ours(module, q, k, v, do, causal, tma, True)}
                timed.update({f"SDPA {b.split('_')[0].lower()}": _sdpa(q, k, v, do, causal, b) for b in BACKENDS})
                ms = {name: (do_bench(bwd, return_mode="median"), do_bench(both, return_mode="median"))
                      for name, (bwd, both) in timed.items()}
                flash = ms["SDPA flash"]
                for name, (bwd, both) in ms.items():
                    err = {TWO: errors[False, causal], ATOMICS: errors[True, causal]}.get(name)
                    row = dict(impl=name, D=dim, L=seq_len, causal=causal, B=args.batch, H=args.heads,
                               backward_ms=bwd, both_ms=both, backward_vs_flash=flash[0] / bwd,
                               both_vs_flash=flash[1] / both, error_units=err)
                    rows.append(row)
                    print(f"{name:<22} {dim:>4} {seq_len:>6} {causal!s:>6} {'' if err is None else f'{err:.2f}':>5} "
                          f"{bwd:8.3f} {row['backward_vs_flash']:6.2f}x {both:10.3f} {row['both_vs_flash']:6.2f}x",
                          flush=True)
                (out / "compare.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))


if __name__ == "__main__":
    main()
