"""What one Triton launch costs the host, by the number and kind of its arguments.

    python scripts/launch_cost.py OUTDIR [--other NOTEBOOK]

A short training step is launch-bound (scripts/profile_step.py): the GPU finishes each kernel
before Python has enqueued the next. This times the host side of launching kernels that do
almost nothing, with 1-8 tensor arguments and 0-32 integer arguments, and then problem 7's four
kernels as its wrapper launches them, so that the cost of a launch can be split into a fixed part
and a part per argument. With --other, a second problem 7 solution notebook (an earlier version,
say) is loaded beside the current one and the two forward and backward wrappers are timed in turns, in the
same process: host time varies more between processes than between such versions. Writes
OUTDIR/launch_cost.json.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
import triton

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _kernel_source(n_tensors: int, n_ints: int) -> str:
    tensors = [f"t{i}" for i in range(n_tensors)]
    ints = [f"s{i}" for i in range(n_ints)]
    total = " + ".join(ints) if ints else "0"
    return (f"def k_{n_tensors}_{n_ints}({', '.join(tensors + ints + ['BLOCK: tl.constexpr'])}):\n"
            f"    offs = tl.arange(0, BLOCK)\n"
            f"    tl.store(t0 + offs, tl.load(t0 + offs) + ({total}))\n")


def make_kernel(n_tensors: int, n_ints: int):
    """A jitted kernel with n_tensors pointer and n_ints integer arguments (one block of work)."""
    import importlib.util
    import tempfile

    # @triton.jit reads the source from a file, so each variant is written to a module of its own.
    folder = Path(tempfile.mkdtemp(prefix="launch-cost-"))
    path = folder / f"k_{n_tensors}_{n_ints}.py"
    header = "import triton\nimport triton.language as tl\n\n\n@triton.jit\n"
    path.write_text(header + _kernel_source(n_tensors, n_ints))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, path.stem)


def host_us(fn, repeats=2000) -> float:
    """Median host microseconds of one fn() over batches of 20 calls (the GPU keeps up)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats // 20):
        t0 = time.perf_counter()
        for _ in range(20):
            fn()
        times.append((time.perf_counter() - t0) * 1e6 / 20)
        torch.cuda.synchronize()
    return statistics.median(times)


def main() -> None:
    import argparse

    from autograder.problems import reference_module

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--other", type=Path, help="another problem 7 solution notebook to time beside this one")
    options = parser.parse_args()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    buf = torch.zeros(1024, device="cuda")
    rows = []
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, triton {triton.__version__}")
    for n_tensors, n_ints in [(1, 0), (1, 8), (1, 16), (1, 32), (4, 0), (8, 0), (8, 16), (8, 32)]:
        kernel = make_kernel(n_tensors, n_ints)
        args = [buf] * n_tensors + [3] * n_ints
        us = host_us(lambda kernel=kernel, args=args: kernel[(1,)](*args, BLOCK=16))
        rows.append({"tensors": n_tensors, "ints": n_ints, "host_us": us})
        print(f"  {n_tensors} tensors, {n_ints:2d} ints: {us:6.1f} us per launch")

    module = reference_module("problem7", REPO)
    shape, causal = (16, 12, 1024, 64), True
    q, k, v, do = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    o, lse = module.attention_forward(q, k, v, causal)
    parts = {"attention_forward": lambda: module.attention_forward(q, k, v, causal),
             "attention_backward": lambda: module.attention_backward(q, k, v, o, lse, do, causal),
             "torch.empty_like": lambda: torch.empty_like(q),
             "launch_config": lambda: module.launch_config(q, causal),
             "input checks": lambda: module._check(q, k, v)}
    kernels = {}
    for name, us in ((n, host_us(fn, 400)) for n, fn in parts.items()):
        kernels[name] = us
        print(f"  {us:6.1f} us  {name}")
    versions = compare_backward(module, options.other, q, k, v, do, causal) if options.other else None
    meta = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
                shape=shape, causal=causal, command=" ".join(sys.argv))
    (out / "launch_cost.json").write_text(json.dumps(dict(meta=meta, synthetic=rows, problem7=kernels,
                                                          versions=versions), indent=1))


def compare_backward(module, other_notebook: Path, q, k, v, do, causal, rounds=7) -> dict:
    """Host microseconds of attention_forward and attention_backward, this notebook's and
    `other_notebook`'s, timed in turns (rounds x 400 calls each); the medians over rounds, and every round."""
    from autograder.kernel_module import import_kernel_module
    from autograder.notebook_code import read
    from autograder.problems import get_spec

    other = import_kernel_module(get_spec("problem7"), read(other_notebook), name="other")
    modules = {"this": module, str(other_notebook): other}
    calls = {}
    for name, m in modules.items():
        o, lse = m.attention_forward(q, k, v, causal)
        calls[f"attention_forward, {name}"] = lambda m=m: m.attention_forward(q, k, v, causal)
        calls[f"attention_backward, {name}"] = lambda m=m, o=o, lse=lse: m.attention_backward(q, k, v, o, lse, do,
                                                                                               causal)
    seen: dict[str, list] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            seen[name].append(host_us(call, 400))
    medians = {name: statistics.median(us) for name, us in seen.items()}
    for name, us in medians.items():
        print(f"  {name}: {us:6.1f} us (median of {rounds} turns: " + ", ".join(f"{u:.1f}" for u in seen[name]) + ")")
    return {"median_us": medians, "rounds_us": seen}

if __name__ == "__main__":
    main()
