"""Compile problem 7's reference kernels for a Hopper GPU (sm_90) on a machine without one.

The CPU interpreter runs kernels that the compiler would reject (a module-level float read inside a
kernel, say) and cannot run the tensor-descriptor kernels' every path, so a machine without a GPU
otherwise never learns whether they compile. This compiles, for each head dimension and mask, every
kernel variant the wrappers launch with the tiles launch_config gives them: the pointer forward and
the descriptor forward, the backward through pointers and through descriptors, each also with
seq_len == 1 (Triton turns an integer argument equal to 1 into a constant, which changes the code).

    python scripts/compile_sm90.py [--dims 64 128]

Run it without TRITON_INTERPRET (the interpreter replaces the kernels). Exits non-zero, naming the
variant, if one does not compile.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _arg_type(name: str) -> str:
    """The signature type of a scalar or pointer argument, by the kernels' naming: upper case are
    bfloat16 tensors except the float32 LSE and Delta, the scales are floats, the rest integers."""
    if name in ("LSE", "DELTA"):
        return "*fp32"
    if name.isupper():
        return "*bf16"
    return "fp32" if name in ("qk_scale", "sm_scale") else "i32"


def compile_variant(fn, descriptors: dict, constexprs: dict, num_warps: int, num_stages: int) -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {name: "constexpr" if name in constexprs else descriptors.get(name) or _arg_type(name)
                 for name in fn.arg_names}
    triton.compile(ASTSource(fn, signature=signature, constexprs=constexprs), target=GPUTarget("cuda", 90, 32),
                   options={"num_warps": num_warps, "num_stages": num_stages})


def variants(module, dims):
    """(label, kernel, descriptor types, constexprs, num_warps, num_stages) of every variant."""
    import triton.language as tl

    def desc(rows, dim):
        return f"tensordesc<bf16[1, 1, {rows}, {dim}]>"

    for dim, causal in itertools.product(dims, (False, True)):
        config = module._GPU_CONFIGS[dim, causal]
        hopper = (*module._HOPPER_FORWARD[dim], *config[4:])
        for length_one in (False, True):
            one = {"seq_len": 1} if length_one else {}
            tag = f"D={dim} causal={causal}{' L=1' if length_one else ''}"
            yield (f"pointer forward, {tag}", module._forward_kernel, {},
                   dict(HEAD_DIM=dim, BLOCK_M=config[0], BLOCK_N=config[1], CAUSAL=causal, **one), *config[2:4])
            block_m, block_n = hopper[:2]
            yield (f"descriptor forward, {tag}", module._forward_kernel_tma,
                   dict(desc_q=desc(block_m, dim), desc_o=desc(block_m, dim), desc_k=desc(block_n, dim),
                        desc_v=desc(block_n, dim)),
                   dict(HEAD_DIM=dim, BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal, HEADS_PER_GROUP=8,
                        OUT_DTYPE=tl.bfloat16, **one), *hopper[2:4])
            m1, n1, m2, n2, num_warps, num_stages = hopper[4:]
            tiles = dict(HEAD_DIM=dim, BLOCK_M1=m1, BLOCK_N1=n1, BLOCK_M2=m2, BLOCK_N2=n2, CAUSAL=causal, **one)
            yield (f"pointer backward, {tag}", module._backward_kernel, {},
                   dict(tiles, TMA=False, desc_q=None, desc_do=None, desc_k=None, desc_v=None), num_warps, num_stages)
            yield (f"descriptor backward, {tag}", module._backward_kernel,
                   dict(desc_q=desc(m1, dim), desc_do=desc(m1, dim), desc_k=desc(n2, dim), desc_v=desc(n2, dim)),
                   dict(tiles, TMA=True), num_warps, num_stages)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("run without TRITON_INTERPRET=1: the interpreter replaces the kernels")
    from autograder.problems import reference_module

    module = reference_module("problem7", REPO)
    for label, fn, descriptors, constexprs, num_warps, num_stages in variants(module, args.dims):
        try:
            compile_variant(fn, descriptors, constexprs, num_warps, num_stages)
        except Exception as exc:
            print(f"FAILED {label}: {type(exc).__name__}: {exc}")
            return 1
        print(f"compiled {label}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
