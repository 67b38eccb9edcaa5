"""Where a training step's time goes at D=64, long L: forward alone, backward alone, and the step, for
problem 7's two backwards and SDPA flash, and the atomic kernel's stages (scratch experiment)."""
import json, sys
from pathlib import Path
import torch, triton
from triton.testing import do_bench
sys.path.insert(0, ".")
from autograder.problems import reference_module
m = reference_module("problem7", Path("."))
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
rows = []


def bench(fn):
    return do_bench(fn, warmup=100, rep=500, return_mode="median")


def measure(name, attention, q, k, v, do):
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
    with torch.no_grad():
        fwd = bench(lambda: attention(q, k, v))
    o = attention(qg, kg, vg)
    bwd = bench(lambda: torch.autograd.grad(o, (qg, kg, vg), do, retain_graph=True))
    step = bench(lambda: torch.autograd.grad(attention(qg, kg, vg), (qg, kg, vg), do))
    return dict(impl=name, fwd_ms=fwd, bwd_ms=bwd, step_ms=step, step_minus_parts=step - fwd - bwd)


def sdpa(causal):
    def run(q, k, v):
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return run


print(torch.cuda.get_device_name(0), torch.__version__, triton.__version__, "bf16 B=4 H=16 D=64; do_bench medians (ms)")
base = dict(m._GPU_CONFIGS)
for L in (16384, 8192):
    for causal in (False, True):
        torch.manual_seed(0)
        q, k, v, do = (torch.randn((4, 16, L, 64), device="cuda", dtype=torch.bfloat16) for _ in range(4))
        found = [measure("SDPA flash", sdpa(causal), q, k, v, do),
                 measure("ours, atomics", lambda q, k, v: m.flash_attention(q, k, v, causal), q, k, v, do),
                 measure("ours, deterministic", lambda q, k, v: m.flash_attention(q, k, v, causal, True), q, k, v, do)]
        for stages in (2, 4):
            m._GPU_CONFIGS[64, causal] = (*base[64, causal][:9], stages)
            found.append(measure(f"ours, atomics, {stages} stages", lambda q, k, v: m.flash_attention(q, k, v, causal),
                                 q, k, v, do))
            m._GPU_CONFIGS[64, causal] = base[64, causal]
        flash = found[0]
        for r in found:
            r.update(L=L, causal=causal, step_vs_flash=flash["step_ms"] / r["step_ms"],
                     bwd_vs_flash=flash["bwd_ms"] / r["bwd_ms"], fwd_vs_flash=flash["fwd_ms"] / r["fwd_ms"])
            rows.append(r)
            print(f"{r['impl']:<28} L={L:5d} causal={causal!s:5}  fwd {r['fwd_ms']:7.3f} ({r['fwd_vs_flash']:.2f}x)  "
                  f"bwd {r['bwd_ms']:7.3f} ({r['bwd_vs_flash']:.2f}x)  step {r['step_ms']:7.3f} ({r['step_vs_flash']:.2f}x)"
                  f"  step - fwd - bwd {r['step_minus_parts']:+.3f}", flush=True)
        (out / "step.json").write_text(json.dumps(rows, indent=1))
