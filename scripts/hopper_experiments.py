"""Three ways past the per-score bottleneck of the attention kernels on Hopper, each measured,
none adopted (docs/gpu-results.md, "Beyond tiles").

At D = 64 a 128x128 tile costs the H100 about as long in exp2 (16 per clock per SM) as in the
matrix units, and problem 3's kernel does the two one after the other. cuDNN and
FlashAttention-3 overlap them with warp specialisation. This script times, next to PyTorch's
peers and in one run, a compact copy of problem 3's descriptor kernel and three variants:

  warp_specialize  `tl.range(..., warp_specialize=True)`: Triton's automatic warp specialisation
  early_scores     the next block's q.k^T issued before this block's softmax (FA3's
                   intra-warpgroup overlap, written by hand)
  exp2_f16x2 / exp2_bf16x2
                   the exponentials as packed 16-bit ex2.approx instructions

    python scripts/hopper_experiments.py --out build/experiments   # a Hopper GPU: writes hopper-experiments.json
    python scripts/hopper_experiments.py --sass                    # no GPU needed: compiles for sm_90 and
                                                                   # counts the exp2 instructions per score

The copy folds the softmax exactly as problem 3's solution does; sequence lengths are multiples
of the tiles, so it has no masking. It is an experiment, not course code.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
import triton.language as tl

LOG2_E = 1.4426950408889634
SHAPES = [(1, 16, 4096, 16), (4, 16, 4096, 64), (4, 16, 16384, 64), (4, 16, 4096, 128)]
# (BLOCK_M, BLOCK_N, num_warps, num_stages): problem 3's Hopper tiles, and 64-row tiles with one
# warpgroup, the only shape for which Triton's Hopper warp specialisation compiles this loop.
CONFIGS = {16: [(64, 128, 4, 3)], 64: [(128, 128, 4, 3), (64, 128, 4, 3)], 128: [(128, 128, 8, 3), (64, 128, 4, 2)]}
VARIANTS = {  # name: (EXP, WARP_SPECIALIZE, EARLY_SCORES)
    "baseline": (0, False, False),
    "warp_specialize": (0, True, False),
    "early_scores": (0, False, True),
    "exp2_f16x2": (1, False, False),
    "exp2_bf16x2": (2, False, False),
}


@triton.jit
def _exp2(x, EXP: tl.constexpr):
    if EXP == 1:
        return tl.inline_asm_elementwise("ex2.approx.f16x2 $0, $1;", "=r,r", [x.to(tl.float16)],
                                         dtype=tl.float16, is_pure=True, pack=2)
    elif EXP == 2:
        return tl.inline_asm_elementwise("ex2.approx.ftz.bf16x2 $0, $1;", "=r,r", [x.to(tl.bfloat16)],
                                         dtype=tl.bfloat16, is_pure=True, pack=2)
    else:
        return tl.math.exp2(x)


@triton.jit
def _update(acc, l_i, m_i, qk, v, qk_scale, EXP: tl.constexpr):
    m_new = tl.maximum(m_i, tl.max(qk, axis=1) * qk_scale)
    alpha = tl.math.exp2(m_i - m_new)
    p = _exp2(qk * qk_scale - m_new[:, None], EXP)
    l_i = l_i * alpha + tl.sum(p.to(tl.float32), axis=1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return acc, l_i, m_new


@triton.jit
def _attention(desc_q, desc_k, desc_v, desc_o, seq_len, qk_scale,
               HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               EXP: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, EARLY_SCORES: tl.constexpr):
    # Descriptors over (B*H*L, D): row0 is the first row of this (batch, head).
    row0 = tl.program_id(1) * seq_len
    q = desc_q.load([row0 + tl.program_id(0) * BLOCK_M, 0])
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    if EARLY_SCORES:
        qk = tl.dot(q, desc_k.load([row0, 0]).T)
        for start_n in range(BLOCK_N, seq_len, BLOCK_N):
            qk_next = tl.dot(q, desc_k.load([row0 + start_n, 0]).T)  # in flight during the softmax below
            v = desc_v.load([row0 + start_n - BLOCK_N, 0])
            acc, l_i, m_i = _update(acc, l_i, m_i, qk, v, qk_scale, EXP)
            qk = qk_next
        acc, l_i, m_i = _update(acc, l_i, m_i, qk, desc_v.load([row0 + seq_len - BLOCK_N, 0]), qk_scale, EXP)
    else:
        for start_n in tl.range(0, seq_len, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
            qk = tl.dot(q, desc_k.load([row0 + start_n, 0]).T)
            acc, l_i, m_i = _update(acc, l_i, m_i, qk, desc_v.load([row0 + start_n, 0]), qk_scale, EXP)
    desc_o.store([row0 + tl.program_id(0) * BLOCK_M, 0], (acc / l_i[:, None]).to(desc_o.dtype))


def attention(q, k, v, config, variant):
    """Run one variant; returns (o, compiled kernel)."""
    import torch
    from triton.tools.tensor_descriptor import TensorDescriptor

    block_m, block_n, num_warps, num_stages = config
    batch, heads, seq_len, head_dim = q.shape
    o = torch.empty_like(q)

    def desc(t, rows):
        return TensorDescriptor.from_tensor(t.reshape(batch * heads * seq_len, head_dim), [rows, head_dim])

    exp, warp_specialize, early = VARIANTS[variant]
    kernel = _attention[(seq_len // block_m, batch * heads)](
        desc(q, block_m), desc(k, block_n), desc(v, block_n), desc(o, block_m), seq_len,
        LOG2_E / math.sqrt(head_dim), HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
        EXP=exp, WARP_SPECIALIZE=warp_specialize, EARLY_SCORES=early,
        num_warps=num_warps, num_stages=num_stages)
    return o, kernel


def _sdpa(backend):
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run(q, k, v):
        with sdpa_kernel(getattr(SDPBackend, backend)):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return run


def time_on_gpu(out_dir: Path):
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from autograder.benchmark import environment

    torch.manual_seed(0)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    triton.testing.do_bench(lambda: a @ a, rep=2000)  # clocks up before the first timing
    report = {"environment": environment(), "command": " ".join(sys.argv), "rows": []}
    for batch, heads, seq_len, head_dim in SHAPES:
        q, k, v = (torch.randn(batch, heads, seq_len, head_dim, device="cuda", dtype=torch.bfloat16)
                   for _ in range(3))
        expected = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
        flops = 4.0 * batch * heads * seq_len**2 * head_dim
        row = {"shape": [batch, heads, seq_len, head_dim], "dtype": "bfloat16", "peers": {}, "variants": []}
        for name, fn in [("SDPA FLASH", _sdpa("FLASH_ATTENTION")), ("SDPA CUDNN", _sdpa("CUDNN_ATTENTION"))]:
            ms = triton.testing.do_bench(lambda fn=fn, q=q, k=k, v=v: fn(q, k, v), rep=300)
            row["peers"][name] = flops / ms / 1e9
        for config in CONFIGS[head_dim]:
            for variant in VARIANTS:
                entry = {"config": list(config), "variant": variant}
                try:
                    o, kernel = attention(q, k, v, config, variant)
                    torch.cuda.synchronize()
                    entry["max_abs_error"] = (o.float() - expected).abs().max().item()
                    entry["warp_specialized"] = "ttg.warp_specialize" in kernel.asm["ttgir"]
                    ms = triton.testing.do_bench(
                        lambda q=q, k=k, v=v, config=config, variant=variant: attention(q, k, v, config, variant),
                        rep=300)
                    entry["tflops"] = flops / ms / 1e9
                except Exception as error:  # a variant that does not compile is a result too
                    lines = [l for l in str(error).splitlines() if l.strip()] or [repr(error)]
                    entry["error"] = lines[0][:200]
                row["variants"].append(entry)
                print(_describe(row, entry), flush=True)
        report["rows"].append(row)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "hopper-experiments.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out_dir / 'hopper-experiments.json'}")


def _describe(row, entry):
    shape = "x".join(map(str, row["shape"]))
    head = f"{shape:16s} {str(tuple(entry['config'])):18s} {entry['variant']:16s}"
    if "error" in entry:
        return f"{head} does not compile: {entry['error']}"
    peers = ", ".join(f"{entry['tflops'] / t:.2f}x {n}" for n, t in row["peers"].items())
    ws = " (warp-specialised)" if entry["warp_specialized"] else ""
    return f"{head} {entry['tflops']:6.1f} TFLOPS = {peers}; max error {entry['max_abs_error']:.2g}{ws}"


def count_exp2_instructions():
    """Compile each exp2 variant for sm_90 (no GPU needed) and count the SASS instructions of its
    inner loop that compute exponentials, per score."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    head_dim, block_m, block_n, num_warps = 64, 128, 128, 4
    scores_per_thread = block_m * block_n // (32 * num_warps)
    signature = {name: f"tensordesc<bf16[{rows}, {head_dim}]>"
                 for name, rows in [("desc_q", block_m), ("desc_k", block_n), ("desc_v", block_n), ("desc_o", block_m)]}
    signature.update(seq_len="i32", qk_scale="fp32", **{c: "constexpr" for c in
                     ["HEAD_DIM", "BLOCK_M", "BLOCK_N", "EXP", "WARP_SPECIALIZE", "EARLY_SCORES"]})
    print(f"sm_90, D={head_dim}, {block_m}x{block_n} tile, {num_warps} warps: "
          f"{scores_per_thread} scores per thread per block")
    for variant in ["baseline", "exp2_f16x2", "exp2_bf16x2"]:
        exp, _, _ = VARIANTS[variant]
        source = ASTSource(_attention, signature=signature, constexprs=dict(
            HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, EXP=exp, WARP_SPECIALIZE=False, EARLY_SCORES=False))
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                                  options={"num_warps": num_warps, "num_stages": 3})
        with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
            cubin.write(compiled.asm["cubin"])
            cubin.flush()
            sass = subprocess.run([str(cuobjdump), "-sass", cubin.name], capture_output=True, text=True).stdout
        loop = _inner_loop(sass)
        mufu = collections.Counter(op for op in loop if op.startswith("MUFU.EX2"))
        print(f"  {variant:12s} "
              + ", ".join(f"{op}: {n / scores_per_thread:.2f} per score" for op, n in sorted(mufu.items())))


def _inner_loop(sass: str) -> list[str]:
    """Opcodes between the target of the last backward branch and that branch."""
    ops = []
    for line in sass.splitlines():
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*)", line)
        if m:
            ops.append((int(m.group(1), 16), m.group(2), m.group(3)))
    loops = [(int(t.group(1), 16), off) for off, op, rest in ops if op.startswith("BRA")
             for t in [re.search(r"0x([0-9a-f]+)", rest)] if t and int(t.group(1), 16) < off]
    start, end = max(loops, key=lambda span: span[1] - span[0])
    return [op for off, op, _ in ops if start <= off <= end]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="build/experiments", help="folder for hopper-experiments.json")
    parser.add_argument("--sass", action="store_true",
                        help="compile for sm_90 and count exp2 instructions; no GPU needed")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: this script compiles for the GPU")
    if args.sass:
        count_exp2_instructions()
    else:
        time_on_gpu(Path(args.out))


if __name__ == "__main__":
    main()
