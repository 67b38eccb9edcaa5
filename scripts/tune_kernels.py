"""Sweep launch configurations of a problem's reference kernel on this GPU, next to its PyTorch
peers, all timed in one run.

    python scripts/tune_kernels.py --problem problem4 --out build/tune

The kernel is the notebook's own, called through its own wrapper with each configuration as
keyword arguments of the wrapper: `config=(BLOCK_M, BLOCK_N, num_warps, num_stages)`, `tma=False`
for the pointer kernel on a Hopper GPU, and for problem 4 `heads_per_group=`. Nothing is copied or
replaced, so what is tuned is exactly what students study and what grading launches. Each
config's output is checked against PyTorch before it is timed. Writes tune-<problem>.json (every
config's median ms and TFLOPS per shape, errors included) after each shape and prints the best
config per shape and kernel body.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
import triton

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autograder import benchmark as bench  # noqa: E402
from autograder.problems import get, reference_module  # noqa: E402
from autograder.references import create_mask_bool  # noqa: E402
from autograder.tma import tma_ready  # noqa: E402

WINDOW, SINK = 1024, 4  # problem 6's benchmark mask


def _sdpa(backend, **kwargs):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run(q, k, v):
        with sdpa_kernel(getattr(SDPBackend, backend)):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, **kwargs)
    return run


class Problem:
    """What the sweep needs to know of one problem's wrapper."""

    def __init__(self, name, call, flops, expected, peers, shapes, head_groups=False):
        self.name, self.call, self.flops, self.head_groups = name, call, flops, head_groups
        self.expected, self.peers, self.shapes = expected, peers, shapes


def _window_flops(b, h, n, d):
    return 4.0 * b * h * d * get("problem6").visible_pairs(n, WINDOW, SINK)


def _window_expected(q, k, v):
    mask = create_mask_bool(q.shape[2], WINDOW, SINK, device=q.device)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


PROBLEMS = {
    "problem3": Problem(
        "problem3", lambda m, q, k, v, **launch: m.flash_attention_forward(q, k, v, **launch),
        lambda b, h, n, d: bench.attention_flops(b, h, n, n, d),
        lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v),
        lambda n: {"SDPA FLASH": _sdpa("FLASH_ATTENTION"), "SDPA CUDNN": _sdpa("CUDNN_ATTENTION")},
        "4,16,4096,16;1,16,4096,16;4,16,4096,64;4,16,16384,64;4,16,4096,128;4,16,16384,128"),
    "problem4": Problem(
        "problem4", lambda m, q, k, v, **launch: m.flash_attention_causal(q, k, v, **launch),
        lambda b, h, n, d: bench.attention_flops(b, h, n, n, d, causal=True),
        lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True),
        lambda n: {"SDPA FLASH causal": _sdpa("FLASH_ATTENTION", is_causal=True),
                   "SDPA CUDNN causal": _sdpa("CUDNN_ATTENTION", is_causal=True)},
        "4,16,4096,64;4,16,16384,64;4,16,4096,128", head_groups=True),
    "problem6": Problem(
        "problem6", lambda m, q, k, v, **launch: m.flash_attention_window(q, k, v, WINDOW, SINK, **launch),
        _window_flops, _window_expected,
        lambda n: {"FlexAttention": get("problem6")._flex_peer(n, WINDOW, SINK, enable_gqa=False)},
        "1,16,16384,128;1,16,16384,64"),
}


def configs(block_ms, block_ns, warps, stages, causal_split):
    for bm, bn, w, s in itertools.product(block_ms, block_ns, warps, stages):
        if causal_split and bm % bn:
            continue  # problem 4's diagonal must be whole key blocks
        if bm == 256 and w == 4:
            continue  # 256 rows need two warp groups
        yield bm, bn, w, s


def time_ms(fn, rep):
    return triton.testing.do_bench(fn, warmup=50, rep=rep, return_mode="median")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problem", choices=sorted(PROBLEMS), default="problem3")
    parser.add_argument("--out", default=str(REPO / "build" / "tune"))
    parser.add_argument("--shapes", default=None, help="B,H,L,D;B,H,L,D;... (default: the problem's)")
    parser.add_argument("--block-m", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--block-n", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--warps", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--stages", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--bodies", default="pointer,tma", help="comma-separated subset of pointer,tma")
    parser.add_argument("--head-groups", type=int, nargs="+", default=[0],
                        help="problem 4: heads per group of its launch order to try (0: the wrapper's own)")
    parser.add_argument("--rep", type=int, default=100, help="do_bench repetition time per config, ms")
    args = parser.parse_args()
    problem = PROBLEMS[args.problem]
    if any(args.head_groups) and not problem.head_groups:
        parser.error(f"--head-groups is for problem4's launch order, not {args.problem}")
    module = reference_module(problem.name, REPO)
    shapes = [tuple(int(x) for x in s.split(",")) for s in (args.shapes or problem.shapes).split(";")]
    bodies = [b for b in args.bodies.split(",") if b == "pointer" or tma_ready(torch.empty(8, device="cuda"))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for b, h, n, d in shapes:
        torch.manual_seed(0)
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        expect = problem.expected(q, k, v).float()
        flops = problem.flops(b, h, n, d)
        shape = [b, h, n, d]
        peers = problem.peers(n)
        first_peer = next(iter(peers.values()))
        time_ms(lambda fn=first_peer, q=q, k=k, v=v: fn(q, k, v), 300)  # let the GPU's clocks settle first
        for name, fn in peers.items():
            ms = time_ms(lambda fn=fn, q=q, k=k, v=v: fn(q, k, v), args.rep)
            rows.append({"impl": name, "shape": shape, "ms": ms, "tflops": flops / ms / 1e9})
        for body in bodies:
            for cfg, group in itertools.product(
                    configs(args.block_m, args.block_n, args.warps, args.stages, args.problem == "problem4"),
                    args.head_groups):
                launch = {"config": cfg, "tma": body == "tma"}
                if group:  # 0: the wrapper's own
                    launch["heads_per_group"] = group
                row = {"impl": body, "config": list(cfg) + ([group] if group else []), "shape": shape}
                try:
                    err = (problem.call(module, q, k, v, **launch)[0].float() - expect).abs().max().item()
                    if not err < 0.05:
                        raise AssertionError(f"wrong output (max err {err:.3g})")
                    ms = time_ms(lambda q=q, k=k, v=v, launch=launch: problem.call(module, q, k, v, **launch), args.rep)
                    row.update(ms=ms, tflops=flops / ms / 1e9)
                except Exception as exc:  # out of shared memory, too many registers: a result, not a crash
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
                rows.append(row)
        timed = [r for r in rows if r["shape"] == shape and "tflops" in r]
        line = f"B={b} H={h} L={n} D={d}: " + ", ".join(
            f"{r['impl']} {r['tflops']:.0f}" for r in timed if "config" not in r)
        for body in bodies:
            best = sorted((r for r in timed if r["impl"] == body), key=lambda r: -r["tflops"])[:3]
            line += f" | {body}: " + ", ".join(f"{tuple(r['config'])} {r['tflops']:.0f}" for r in best)
        print(line, flush=True)
        # Written after every shape, so a run cut off by a time limit keeps what it measured.
        (out / f"tune-{args.problem}.json").write_text(
            json.dumps({"environment": bench.environment(), "problem": args.problem, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
