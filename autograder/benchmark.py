"""Honest timings: do_bench medians, TFLOPS, peak memory, and peers timed in the same run."""
from __future__ import annotations

import json
import os
import platform

import torch

from .references import naive_attention


def attention_flops(b, h, lq, lk, d, causal=False) -> float:
    """4*B*H*Lq*Lk*D: two matmuls (QK^T and PV) of 2*Lq*Lk*D each; halved when causal."""
    flops = 4.0 * b * h * lq * lk * d
    return flops / 2 if causal else flops


def _sdpa(backend_name):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def run(q, k, v):
        with sdpa_kernel(backend):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return run


GRADING_SKIP = "Benchmark skipped while grading: timings are not part of this problem's grade."


def kernel_skip_reason(goal: str = "compare your kernel with PyTorch") -> str | None:
    """Why a notebook's kernel benchmark cannot time anything here (None when it can).

    While grading, timings are not part of the grade; under Triton's CPU interpreter, on a
    machine without a GPU or with one older than Triton supports (a T4), a kernel runs as NumPy
    code and its speed says nothing about a GPU.
    """
    if os.environ.get("COURSE_GRADING") == "1":
        return GRADING_SKIP
    if not torch.cuda.is_available():
        return ("No GPU here: under Triton's CPU interpreter a kernel runs as NumPy code, so its speed says "
                f"nothing about the GPU. Run this cell on a GPU to {goal}.")
    if os.environ.get("TRITON_INTERPRET") == "1":
        return (f"The kernels run in Triton's CPU interpreter here ({torch.cuda.get_device_name(0)} is older "
                "than the compute capability 8.0 Triton needs), so there is nothing meaningful to time. "
                f"Run this cell on an A100, L4, H100 or newer to {goal}.")
    return None


def peers() -> dict:
    """PyTorch implementations to time next to a kernel, each backend pinned and named."""
    from .recorded import is_recorded

    # The student edition has no naive_attention of its own: PyTorch's math backend materialises
    # the same (L x L) scores.
    naive = _sdpa("MATH") if is_recorded(naive_attention) else (lambda q, k, v: naive_attention(q, k, v)[0])
    return {
        "naive PyTorch": naive,
        "SDPA FLASH_ATTENTION": _sdpa("FLASH_ATTENTION"),
        "SDPA CUDNN_ATTENTION": _sdpa("CUDNN_ATTENTION"),
    }


def environment() -> dict:
    import triton

    info = {"torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["cuda"] = torch.version.cuda
    return info


def _naive_bytes(b, h, l, dtype):
    # S in the input dtype, P in float32, then P cast back: about 8 bytes per score for 16-bit inputs.
    return b * h * l * l * (2 * torch.finfo(dtype).bits // 8 + 4)


def measure(fn, q, k, v, warmup_ms=100, rep_ms=500) -> dict:
    """Median time (ms) with triton.testing.do_bench, and the peak memory of one call (MiB)."""
    import triton

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn(q, k, v)
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    ms = triton.testing.do_bench(lambda: fn(q, k, v), warmup=warmup_ms, rep=rep_ms, return_mode="median")
    return {"ms": ms, "peak_mib": peak}


def run_benchmark(impls: dict, shapes, dtype=torch.bfloat16, progress=True) -> list[dict]:
    """Time every implementation on every (B, H, L, D) shape. Failures become rows with a reason."""
    from tqdm.auto import tqdm

    if not torch.cuda.is_available():
        raise RuntimeError("benchmarks need a CUDA GPU; under the CPU interpreter timings mean nothing")
    rows = []
    jobs = [(shape, name) for shape in shapes for name in impls]
    bar = tqdm(jobs, desc="benchmark", disable=not progress)
    current = None
    for (b, h, l, d), name in bar:
        bar.set_postfix_str(f"{name} L={l} D={d}")
        if current != (b, h, l, d):
            torch.manual_seed(0)
            q, k, v = (torch.randn(b, h, l, d, device="cuda", dtype=dtype) for _ in range(3))
            current = (b, h, l, d)
        row = {"impl": name, "B": b, "H": h, "L": l, "D": d, "dtype": str(dtype).replace("torch.", "")}
        if name == "naive PyTorch":
            need = _naive_bytes(b, h, l, dtype)
            free = torch.cuda.mem_get_info()[0]
            if need > 0.8 * free:
                rows.append({**row, "skipped": f"needs ~{need / 2**30:.0f} GiB for the score matrix"})
                continue
        try:
            m = measure(impls[name], q, k, v)
            rows.append({**row, **m, "tflops": attention_flops(b, h, l, l, d) / (m["ms"] * 1e-3) / 1e12})
        except Exception as exc:  # an unsupported backend/shape is a result, not a crash
            rows.append({**row, "skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"})
        torch.cuda.empty_cache()
    return rows


def format_table(rows) -> str:
    lines = [f"{'implementation':<24} {'B':>3} {'H':>3} {'L':>6} {'D':>4} {'ms':>9} {'TFLOPS':>8} {'peak MiB':>9}"]
    for r in rows:
        head = f"{r['impl']:<24} {r['B']:>3} {r['H']:>3} {r['L']:>6} {r['D']:>4}"
        if "skipped" in r:
            lines.append(f"{head}  skipped: {r['skipped']}")
        else:
            lines.append(f"{head} {r['ms']:>9.3f} {r['tflops']:>8.1f} {r['peak_mib']:>9.0f}")
    return "\n".join(lines)


def plot(rows, path=None, title=""):
    """TFLOPS and peak memory against L, one line per implementation, one column per head dim."""
    import matplotlib.pyplot as plt

    dims = sorted({r["D"] for r in rows})
    fig, axes = plt.subplots(2, len(dims), figsize=(4.5 * len(dims), 7), squeeze=False)
    for col, d in enumerate(dims):
        for name in dict.fromkeys(r["impl"] for r in rows):
            pts = [r for r in rows if r["D"] == d and r["impl"] == name and "skipped" not in r]
            if not pts:
                continue
            ls = [r["L"] for r in pts]
            axes[0][col].plot(ls, [r["tflops"] for r in pts], "o-", label=name)
            axes[1][col].plot(ls, [r["peak_mib"] for r in pts], "o-", label=name)
        axes[0][col].set_title(f"D={d}")
        for ax, label in ((axes[0][col], "TFLOPS"), (axes[1][col], "peak extra memory (MiB)")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("sequence length L")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[1][col].set_yscale("log")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig


def plot_backward(rows, path, ylabel="TFLOPS"):
    """TFLOPS against L of problems 7 and 8's benchmarks: a row of panels for forward + backward and
    one for the backward alone (each where the rows have it), a panel per head dim, a line per kernel
    (and per causal setting where the rows have one: one colour per kernel, dashed when causal)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = sorted({r["D"] for r in rows})
    measures = [(key, title) for key, title in (("fwd_bwd_tflops", "forward + backward"), ("bwd_tflops", "backward"))
                if any(key in r for r in rows)]
    fig, axes = plt.subplots(len(measures), len(dims), figsize=(6 * len(dims), 4.5 * len(measures)), squeeze=False)
    for (key, title), ax_row in zip(measures, axes, strict=True):
        for ax, d in zip(ax_row, dims, strict=True):
            for number, impl in enumerate(dict.fromkeys(r["impl"] for r in rows)):
                for is_causal in dict.fromkeys(r.get("causal") for r in rows):
                    pts = [(r["L"], r[key]) for r in rows if r["D"] == d and r["impl"] == impl
                           and r.get("causal") == is_causal and key in r]
                    if pts:
                        ax.plot(*zip(*pts, strict=True), marker="o", ls="--" if is_causal else "-",
                                color=f"C{number % 10}", label=f"{impl}{' causal' if is_causal else ''}")
            ax.set_xscale("log", base=2)
            ax.set(title=f"{title}, D={d}", xlabel="L", ylabel=ylabel)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def save(rows, path_json, env=None):
    with open(path_json, "w") as f:
        json.dump({"environment": env or environment(), "rows": rows}, f, indent=1)


def speedup_table(rows, kernel_name) -> str:
    """Kernel TFLOPS as a multiple of each peer's, per shape."""
    out = []
    for r in rows:
        if r["impl"] != kernel_name or "skipped" in r:
            continue
        same = [p for p in rows if (p["B"], p["H"], p["L"], p["D"]) == (r["B"], r["H"], r["L"], r["D"])
                and p["impl"] != kernel_name and "skipped" not in p]
        ratios = ", ".join(f"{r['tflops'] / p['tflops']:.2f}x {p['impl']}" for p in same)
        out.append(f"B={r['B']} H={r['H']} L={r['L']} D={r['D']}: {r['tflops']:.0f} TFLOPS = {ratios}")
    return "\n".join(out)


