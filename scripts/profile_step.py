"""Where a training step's attention time goes on a GPU: problem 7's reference kernels (forward and
backward through its autograd function) against SDPA's FLASH_ATTENTION backend, at one shape.

    python scripts/profile_step.py OUTDIR [--shape 16 12 1024 64] [--dtype bfloat16] [--causal yes]

For each implementation, one step is `o = attention(q, k, v); torch.autograd.grad(o, (q, k, v), do)`:
- step ms: the do_bench median of the whole step (what `autograder bench` reports);
- kernels ms: the sum of the GPU kernels' durations in one step (torch.profiler, 20 steps), each
  kernel listed with its mean duration;
- host ms: the CPU time to enqueue one step while the GPU is idle (median of 50), split into the
  forward call and the backward call;
- graphed ms: the do_bench median of the same step captured once in a CUDA graph and replayed, as
  a training loop under `torch.compile(mode="reduce-overhead")` or `torch.cuda.make_graphed_callables`
  runs it: no Python between the kernels, so this is the step's time when the GPU is the limit.
When host ms is close to step ms, the GPU waits for the CPU: the step is launch-bound, and faster
kernels cannot help. For the reference, the host time is split further: the input checks, the
forward and backward wrappers without autograd, and a bare launch of the smallest kernel.
OUTDIR/profile_step.json keeps every number.

    python scripts/profile_step.py OUTDIR --loop 3000 [--shape ...]

runs only 3000 steps of the reference, without timing anything, for a sampling profiler outside:
`py-spy record --native -f raw -o steps.raw -- python scripts/profile_step.py OUTDIR --loop 3000`
shows which host functions the enqueue time goes to.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autograder.problems import reference_module  # noqa: E402


def sdpa_flash(causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run(q, k, v):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return run


def host_times(attention, q, k, v, do, repeats=50) -> dict:
    """Median CPU milliseconds to enqueue the forward call and the backward call, the GPU idle before each step."""
    forward, backward = [], []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        o = attention(q, k, v)
        t1 = time.perf_counter()
        torch.autograd.grad(o, (q, k, v), do)
        t2 = time.perf_counter()
        forward.append((t1 - t0) * 1e3)
        backward.append((t2 - t1) * 1e3)
    torch.cuda.synchronize()
    return {"host_forward_ms": statistics.median(forward), "host_backward_ms": statistics.median(backward),
            "host_ms": statistics.median(f + b for f, b in zip(forward, backward, strict=True))}


def host_ms(fn, repeats=50) -> float:
    """Median CPU milliseconds of `fn()`, the GPU idle before each call."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize()
    return statistics.median(times)


def reference_host_parts(module, q, k, v, do, causal) -> dict:
    """Where the reference's host time goes, each part alone (ms)."""
    import triton

    qd, kd, vd = (t.detach() for t in (q, k, v))
    o, lse = module.attention_forward(qd, kd, vd, causal)
    delta = torch.empty_like(lse)
    block = module.launch_config(qd, causal)[6]  # BLOCK_M2, as attention_backward launches it
    grid = (triton.cdiv(qd.shape[2], block), qd.shape[0] * qd.shape[1])

    def preprocess():
        module._preprocess_kernel[grid](o, do, delta, *o.stride(), *do.stride(), qd.shape[1], qd.shape[2],
                                        HEAD_DIM=qd.shape[3], BLOCK_M=block)
    return {"input checks": host_ms(lambda: module._check(qd, kd, vd)),
            "launch_config": host_ms(lambda: module.launch_config(qd, causal)),
            "attention_forward (no autograd)": host_ms(lambda: module.attention_forward(qd, kd, vd, causal)),
            "attention_backward (no autograd)": host_ms(
                lambda: module.attention_backward(qd, kd, vd, o, lse, do, causal)),
            "one launch of the preprocess kernel (8 arguments)": host_ms(preprocess),
            "torch.empty_like x 4": host_ms(lambda: [torch.empty_like(qd) for _ in range(4)])}


def graphed_step_ms(attention, q, k, v, do) -> float:
    """do_bench median (ms) of one step captured in a CUDA graph and replayed."""
    from triton.testing import do_bench

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (compile, allocate) outside the capture
        for _ in range(3):
            torch.autograd.grad(attention(q, k, v), (q, k, v), do)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        torch.autograd.grad(attention(q, k, v), (q, k, v), do)
    return do_bench(graph.replay, warmup=100, rep=500, return_mode="median")


def kernel_times(attention, q, k, v, do, steps=20) -> dict:
    """The GPU kernels of one step: {name: mean ms per step}, from torch.profiler over `steps` steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            o = attention(q, k, v)
            torch.autograd.grad(o, (q, k, v), do)
        torch.cuda.synchronize()
    per_kernel: dict[str, float] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[event.name] = per_kernel.get(event.name, 0.0) + event.device_time / 1e3 / steps
    return per_kernel


def main() -> None:
    from triton.testing import do_bench

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--shape", type=int, nargs=4, default=[16, 12, 1024, 64], metavar=("B", "H", "L", "D"))
    parser.add_argument("--dtype", default="bfloat16", choices=["float16", "bfloat16"])
    parser.add_argument("--causal", default="yes", choices=["yes", "no"])
    parser.add_argument("--loop", type=int, default=0, metavar="STEPS",
                        help="only run this many reference steps (for a sampling profiler)")
    args = parser.parse_args()
    dtype, shape, causal = getattr(torch, args.dtype), tuple(args.shape), args.causal == "yes"
    module = reference_module("problem7", REPO)
    torch.manual_seed(0)
    q, k, v = (torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    do = torch.randn(shape, device="cuda", dtype=dtype)
    if args.loop:
        for _ in range(args.loop):
            o = module.flash_attention(q, k, v, causal)
            torch.autograd.grad(o, (q, k, v), do)
        torch.cuda.synchronize()
        return
    impls = {"problem 7 reference": lambda q_, k_, v_: module.flash_attention(q_, k_, v_, causal),
             "SDPA FLASH_ATTENTION": sdpa_flash(causal)}
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, triton {__import__('triton').__version__}, "
          f"{args.dtype}, shape (B, H, L, D) = {shape}, causal={causal}")
    rows = []
    for name, attention in impls.items():
        def step(attention=attention):
            o = attention(q, k, v)
            torch.autograd.grad(o, (q, k, v), do)
        step()
        step_ms = do_bench(step, warmup=100, rep=500, return_mode="median")
        host = host_times(attention, q, k, v, do)
        kernels = kernel_times(attention, q, k, v, do)
        graphed = graphed_step_ms(attention, q, k, v, do)
        row = {"impl": name, "step_ms": step_ms, "graphed_ms": graphed, "kernels_ms": sum(kernels.values()), **host,
               "kernels": kernels}
        rows.append(row)
        print(f"\n{name}: step {step_ms:.3f} ms (do_bench median); GPU kernels {row['kernels_ms']:.3f} ms; "
              f"host {host['host_ms']:.3f} ms to enqueue (forward {host['host_forward_ms']:.3f}, "
              f"backward {host['host_backward_ms']:.3f}); in a CUDA graph {graphed:.3f} ms")
        for kernel, ms in sorted(kernels.items(), key=lambda kv: -kv[1]):
            print(f"  {ms:8.4f} ms  {kernel[:100]}")
        if name == "problem 7 reference":
            row["host_parts"] = reference_host_parts(module, q, k, v, do, causal)
            print("  host time of its parts, each alone:")
            for part, ms in row["host_parts"].items():
                print(f"  {ms:8.4f} ms  {part}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    meta = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=__import__("triton").__version__,
                dtype=args.dtype, shape=shape, causal=causal, command=" ".join(sys.argv))
    (Path(args.out) / "profile_step.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))


if __name__ == "__main__":
    main()
