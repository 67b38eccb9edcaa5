"""Compile the course's reference kernels for a Hopper GPU (sm_90) on a machine without one.

The CPU interpreter runs kernels that the compiler would reject (a module-level float read inside a
kernel, say), so a machine without a GPU otherwise never learns whether they compile. For each
problem with Triton kernels (3 to 8) and head dimension, this compiles every kernel the wrappers
launch on a Hopper GPU with the tiles they give it: the pointer kernels and the tensor-descriptor
kernels, causal and not, counting visits or not, and each once more with its sequence lengths equal
to 1 (Triton turns an integer argument equal to 1 into a constant, which changes the code).

    python scripts/compile_sm90.py [--problems problem3 ... problem8] [--dims 64 128]

Run it without TRITON_INTERPRET (the interpreter replaces the kernels). Exits non-zero, naming the
variant, if one does not compile.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROBLEMS = ("problem3", "problem4", "problem5", "problem6", "problem7", "problem8")


def signature(fn, constexprs: dict, rows: dict) -> dict:
    """Triton's signature of `fn` from the kernels' naming: upper-case arguments are bfloat16 tensors
    (LSE, DELTA, DQ32, and DQ when DQ_ATOMICS, float32; VISITS int32), desc_* tensor descriptors of a
    (B, H, L, D) tensor
    (float32 if named *32) whose tiles have `rows[name]` positions, the scales floats and the other
    arguments integers."""
    dim = constexprs["HEAD_DIM"]
    types = {}
    for name in fn.arg_names:
        if name in constexprs:
            types[name] = "constexpr"
        elif name.startswith("desc_"):
            element = "fp32" if name.endswith("32") else "bf16"
            types[name] = f"tensordesc<{element}[1, 1, {rows[name]}, {dim}]>"
        elif name.isupper():
            float32 = ("LSE", "DELTA", "DQ32") + (("DQ",) if constexprs.get("DQ_ATOMICS") else ())
            types[name] = "*fp32" if name in float32 else "*i32" if name == "VISITS" else "*bf16"
        else:
            types[name] = "fp32" if name.endswith("_scale") else "i32"
    return types


def compile_variant(fn, constexprs: dict, num_warps: int, num_stages: int, rows: dict | None = None) -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    missing = [n for i, n in enumerate(fn.arg_names) if fn.params[i].is_constexpr and n not in constexprs]
    if missing:
        raise ValueError(f"no value for the constexpr arguments {missing}")
    source = ASTSource(fn, signature=signature(fn, constexprs, rows or {}), constexprs=constexprs)
    triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": num_stages})


def _descriptor_rows(block_m, block_n):
    return dict(desc_q=block_m, desc_o=block_m, desc_k=block_n, desc_v=block_n)


def _kernels(problem: str, module, dim: int):
    """(label, kernel, constexprs, num_warps, num_stages, descriptor rows) that `problem`'s wrappers
    launch on a Hopper GPU for head dimension `dim`."""
    import triton.language as tl

    bf16 = dict(OUT_DTYPE=tl.bfloat16)
    if problem in ("problem3", "problem4", "problem6"):
        pointer, descriptor = {"problem3": ("_flash_attention_forward_kernel", "_flash_attention_forward_kernel_tma"),
                               "problem4": ("_causal_attention_kernel", "_causal_attention_kernel_tma"),
                               "problem6": ("_flash_attention_window_kernel",
                                            "_flash_attention_window_kernel_tma")}[problem]
        block_m, block_n, warps, stages = (module._HOPPER_CONFIGS[dim] if problem != "problem6" else (64, 64, 4, 3))
        tiles = dict(HEAD_DIM=dim, BLOCK_M=block_m, BLOCK_N=block_n)
        for visits in ((False, True) if problem != "problem3" else (None,)):
            count = {} if visits is None else dict(COUNT_VISITS=visits)
            tag = "" if visits is None else f", counting visits={visits}"
            yield f"pointer kernel{tag}", getattr(module, pointer), {**tiles, **count}, warps, stages, None
            yield (f"descriptor kernel{tag}", getattr(module, descriptor), {**tiles, **count, **bf16}, warps, stages,
                   _descriptor_rows(block_m, block_n))
    elif problem == "problem5":
        block_m, block_n, warps, stages = module._launch_config(dim)
        yield "pointer kernel", module._gqa_forward_kernel, dict(HEAD_DIM=dim, BLOCK_M=block_m, BLOCK_N=block_n), \
            warps, stages, None
    elif problem == "problem7":
        for causal in (False, True):
            config = module._GPU_CONFIGS[dim, causal]
            hopper = (*module._HOPPER_FORWARD[dim], *config[4:])
            m1, n1, m2, n2, warps, stages = hopper[4:]
            backward = dict(HEAD_DIM=dim, BLOCK_M1=m1, BLOCK_N1=n1, BLOCK_M2=m2, BLOCK_N2=n2, CAUSAL=causal)
            no_descriptors = dict(desc_q=None, desc_do=None, desc_k=None, desc_v=None, desc_dq32=None)
            yield (f"pointer forward, causal={causal}", module._forward_kernel,
                   dict(HEAD_DIM=dim, BLOCK_M=config[0], BLOCK_N=config[1], CAUSAL=causal), *config[2:4], None)
            yield (f"descriptor forward, causal={causal}", module._forward_kernel_tma,
                   dict(HEAD_DIM=dim, BLOCK_M=hopper[0], BLOCK_N=hopper[1], CAUSAL=causal, HEADS_PER_GROUP=8, **bf16),
                   *hopper[2:4], _descriptor_rows(*hopper[:2]))
            yield (f"pointer backward, causal={causal}", module._backward_kernel,
                   dict(backward, TMA=False, DQ_ATOMICS=False, **no_descriptors), warps, stages, None)
            yield (f"descriptor backward, causal={causal}", module._backward_kernel,
                   dict(backward, TMA=True, DQ_ATOMICS=False, desc_dq32=None), warps, stages,
                   dict(desc_q=m1, desc_do=m1, desc_k=n2, desc_v=n2))
            if dim <= 64:   # dQ added up by atomics (module._dq_atomics)
                yield (f"atomic-dQ backward, causal={causal}", module._backward_kernel,
                       dict(backward, TMA=True, DQ_ATOMICS=True, desc_k=None, desc_v=None), warps, stages,
                       dict(desc_q=m1, desc_do=m1, desc_dq32=m1))
                yield (f"atomic-dQ backward through pointers, causal={causal}", module._backward_kernel,
                       dict(backward, TMA=False, DQ_ATOMICS=True, **no_descriptors), warps, stages, None)
        yield "preprocess", module._preprocess_kernel, dict(HEAD_DIM=dim, BLOCK_M=m2), 4, 3, None
    elif problem == "problem8":
        block_m, block_n, m1, n1, m2, n2, warps, stages = module._GPU_CONFIGS[dim]
        yield ("forward", module._forward_kernel, dict(HEAD_DIM=dim, BLOCK_M=block_m, BLOCK_N=block_n), warps, stages,
               None)
        yield "preprocess", module._preprocess_kernel, dict(HEAD_DIM=dim, BLOCK_M=m2), 4, 3, None
        for visits in (False, True):
            yield (f"backward, counting visits={visits}", module._backward_kernel,
                   dict(HEAD_DIM=dim, BLOCK_M1=m1, BLOCK_N1=n1, BLOCK_M2=m2, BLOCK_N2=n2, COUNT_VISITS=visits),
                   warps, stages, None)


def variants(problems, dims):
    """(label, kernel, constexprs, num_warps, num_stages, descriptor rows) of every variant: each
    kernel as launched, and again with its sequence-length arguments equal to 1."""
    from autograder.problems import reference_module

    for problem in problems:
        module = reference_module(problem, REPO)
        for dim, (label, fn, constexprs, warps, stages, rows) in ((d, k) for d in dims
                                                                  for k in _kernels(problem, module, d)):
            lengths = {n: 1 for n in fn.arg_names if n.startswith("seq_len")}
            for one in (False, True):
                yield (f"{problem} D={dim} {label}{', L=1' if one else ''}", fn,
                       {**constexprs, **(lengths if one else {})}, warps, stages, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("run without TRITON_INTERPRET=1: the interpreter replaces the kernels")
    count = 0
    for label, fn, constexprs, num_warps, num_stages, rows in variants(args.problems, args.dims):
        try:
            compile_variant(fn, constexprs, num_warps, num_stages, rows)
        except Exception as exc:
            print(f"FAILED {label}: {type(exc).__name__}: {exc}")
            return 1
        count += 1
        print(f"compiled {label}", flush=True)
    print(f"{count} kernel variants compiled for sm_90")
    return 0


if __name__ == "__main__":
    sys.exit(main())
