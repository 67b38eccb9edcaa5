"""Three layouts of the atomic-dQ step at D=64, timed in one run (scratch experiment)."""
import functools, importlib.util, json, math, sys
from pathlib import Path
import torch, triton
import triton.language as tl
REPO = Path(".").resolve()
sys.path.insert(0, str(REPO))
from autograder.problems import reference_module
from autograder.references import attention_grads_reference
from autograder.checks import GRAD_TOLERANCES
from autograder.tma import tile_descriptor
from triton.testing import do_bench

m = reference_module("problem7", REPO)
recompute_p, score_grad, _load_rows = m.recompute_p, m.score_grad, m._load_rows
spec = importlib.util.spec_from_file_location("exp", REPO / "scripts" / "atomic_dq_experiment.py")
exp = importlib.util.module_from_spec(spec); spec.loader.exec_module(exp)
LOG2_E = 1.4426950408889634


@triton.jit
def _step_b(dk_t, dv_t, k, v, desc_q, desc_do, desc_dq, LSE, DELTA, off_b, off_h, row0, start_m, offs_m, offs_n,
            qk_scale, sm_scale, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, ON_DIAGONAL: tl.constexpr):
    query_idx = start_m + offs_m
    q = desc_q.load([off_b, off_h, start_m, 0]).reshape(BLOCK_M, HEAD_DIM)
    do = desc_do.load([off_b, off_h, start_m, 0]).reshape(BLOCK_M, HEAD_DIM)
    lse = tl.load(LSE + row0 + query_idx)
    delta = tl.load(DELTA + row0 + query_idx)
    p = recompute_p(tl.dot(q, tl.trans(k)), lse, qk_scale, query_idx, offs_n, ON_DIAGONAL)
    dv_t = tl.dot(tl.trans(do), p.to(do.dtype), dv_t)
    ds = (score_grad(p, tl.dot(do, tl.trans(v)), delta) * sm_scale).to(q.dtype)
    dk_t = tl.dot(tl.trans(q), ds, dk_t)
    dq = tl.dot(ds, k)
    desc_dq.atomic_add([off_b, off_h, start_m, 0], dq.reshape(1, 1, BLOCK_M, HEAD_DIM))
    return dk_t, dv_t


@triton.jit
def _kernel_b(desc_q, desc_do, desc_dq, K, V, DK, DV, LSE, DELTA, n_heads, seq_len, qk_scale, sm_scale,
              HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr):
    start_n = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = off_bh // n_heads
    off_h = off_bh % n_heads
    row0 = off_bh.to(tl.int64) * seq_len
    offs_n = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    kv = (row0 + offs_n)[:, None] * HEAD_DIM + offs_d[None, :]
    k = tl.load(K + kv)
    v = tl.load(V + kv)
    dk_t = tl.zeros([HEAD_DIM, BLOCK_N], dtype=tl.float32)
    dv_t = tl.zeros([HEAD_DIM, BLOCK_N], dtype=tl.float32)
    lo = start_n * BLOCK_N if CAUSAL else 0
    mid = lo + BLOCK_N if CAUSAL else 0
    for start_m in range(lo, mid, BLOCK_M):
        dk_t, dv_t = _step_b(dk_t, dv_t, k, v, desc_q, desc_do, desc_dq, LSE, DELTA, off_b, off_h, row0, start_m,
                             offs_m, offs_n, qk_scale, sm_scale, HEAD_DIM, BLOCK_M, True)
    for start_m in range(mid, seq_len, BLOCK_M):
        dk_t, dv_t = _step_b(dk_t, dv_t, k, v, desc_q, desc_do, desc_dq, LSE, DELTA, off_b, off_h, row0, start_m,
                             offs_m, offs_n, qk_scale, sm_scale, HEAD_DIM, BLOCK_M, False)
    kv_t = (row0 + offs_n)[None, :] * HEAD_DIM + offs_d[:, None]
    tl.store(DK + kv_t, dk_t.to(DK.dtype.element_ty))
    tl.store(DV + kv_t, dv_t.to(DV.dtype.element_ty))


def backward_b(q, k, v, o, lse, do, causal, bm=64, bn=64, warps=4, stages=3):
    B, H, L, D = q.shape
    delta = torch.empty((B, H, L), device=q.device, dtype=torch.float32)
    exp._delta_kernel[(triton.cdiv(B * H * L, 64),)](o, do, delta, B * H * L, HEAD_DIM=D, BLOCK=64)
    dq32 = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    s = 1 / math.sqrt(D)
    _kernel_b[(L // bn, B * H)](tile_descriptor(q, bm), tile_descriptor(do, bm), tile_descriptor(dq32, bm), k, v, dk,
                                 dv, lse, delta, H, L, s * LOG2_E, s, HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn,
                                 CAUSAL=causal, num_warps=warps, num_stages=stages)
    return dq32.to(q.dtype), dk, dv


@triton.jit
def _kernel_a(Q, K, V, DO, DK, DV, desc_q, desc_do, desc_dq, LSE, DELTA, n_heads, seq_len, qk_scale, sm_scale,
              HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
              ROTATE: tl.constexpr, TRANSPOSED: tl.constexpr):
    start_n = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = off_bh // n_heads
    off_h = off_bh % n_heads
    row0 = off_bh.to(tl.int64) * seq_len
    offs_n = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    kv = (row0 + offs_n)[:, None] * HEAD_DIM + offs_d[None, :]
    k = tl.load(K + kv)
    v = tl.load(V + kv)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    lo = start_n * BLOCK_N if CAUSAL else 0
    mid = lo + BLOCK_N if CAUSAL else 0
    for start_m in range(lo, mid, BLOCK_M):
        dk, dv = _step_a(dk, dv, k, v, desc_q, desc_do, desc_dq, LSE, DELTA, off_b, off_h, row0, start_m,
                         offs_m, offs_n, qk_scale, sm_scale, HEAD_DIM, BLOCK_M, True, TRANSPOSED)
    n_steps = tl.cdiv(seq_len - mid, BLOCK_M)
    for j in range(0, n_steps):
        if ROTATE:
            start_m = mid + ((j + start_n) % n_steps) * BLOCK_M
        else:
            start_m = mid + j * BLOCK_M
        dk, dv = _step_a(dk, dv, k, v, desc_q, desc_do, desc_dq, LSE, DELTA, off_b, off_h, row0, start_m,
                         offs_m, offs_n, qk_scale, sm_scale, HEAD_DIM, BLOCK_M, False, TRANSPOSED)
    tl.store(DK + kv, dk.to(DK.dtype.element_ty))
    tl.store(DV + kv, dv.to(DV.dtype.element_ty))


@triton.jit
def _step_a(dk, dv, k, v, desc_q, desc_do, desc_dq, LSE, DELTA, off_b, off_h, row0, start_m, offs_m, offs_n,
            qk_scale, sm_scale, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, ON_DIAGONAL: tl.constexpr,
            TRANSPOSED: tl.constexpr):
    query_idx = start_m + offs_m
    q = desc_q.load([off_b, off_h, start_m, 0]).reshape(BLOCK_M, HEAD_DIM)
    do = desc_do.load([off_b, off_h, start_m, 0]).reshape(BLOCK_M, HEAD_DIM)
    lse = tl.load(LSE + row0 + query_idx)
    delta = tl.load(DELTA + row0 + query_idx)
    if TRANSPOSED:   # the experiment's locked S^T math
        p_t = tl.math.exp2(tl.dot(k, tl.trans(q)) * qk_scale - (lse * 1.4426950408889634)[None, :])
        if ON_DIAGONAL:
            p_t = tl.where(offs_n[:, None] <= query_idx[None, :], p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv)
        ds_t = (p_t * (tl.dot(v, tl.trans(do)) - delta[None, :]) * sm_scale).to(q.dtype)
        dk = tl.dot(ds_t, q, dk)
        dq = tl.dot(tl.trans(ds_t), k)
    else:
        p = recompute_p(tl.dot(q, tl.trans(k)), lse, qk_scale, query_idx, offs_n, ON_DIAGONAL)
        dv = tl.dot(tl.trans(p.to(do.dtype)), do, dv)
        ds = (score_grad(p, tl.dot(do, tl.trans(v)), delta) * sm_scale).to(q.dtype)
        dk = tl.dot(tl.trans(ds), q, dk)
        dq = tl.dot(ds, k)
    desc_dq.atomic_add([off_b, off_h, start_m, 0], dq.reshape(1, 1, BLOCK_M, HEAD_DIM))
    return dk, dv


def backward_a(q, k, v, o, lse, do, causal, rotate=False, transposed=False, bm=64, bn=64, warps=4, stages=3):
    B, H, L, D = q.shape
    delta = torch.empty((B, H, L), device=q.device, dtype=torch.float32)
    exp._delta_kernel[(triton.cdiv(B * H * L, 64),)](o, do, delta, B * H * L, HEAD_DIM=D, BLOCK=64)
    dq32 = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    s = 1 / math.sqrt(D)
    _kernel_a[(L // bn, B * H)](q, k, v, do, dk, dv, tile_descriptor(q, bm), tile_descriptor(do, bm),
                                 tile_descriptor(dq32, bm), lse, delta, H, L, s * LOG2_E, s, HEAD_DIM=D, BLOCK_M=bm,
                                 BLOCK_N=bn, CAUSAL=causal, ROTATE=rotate, TRANSPOSED=transposed,
                                 num_warps=warps, num_stages=stages)
    return dq32.to(q.dtype), dk, dv


def err_units(fn, causal, dtype=torch.bfloat16):
    torch.manual_seed(0)
    q, k, v, do = (torch.randn((1, 2, 1024, 64), device="cuda", dtype=dtype) for _ in range(4))
    o, lse = m.attention_forward(q, k, v, causal)
    got = fn(q, k, v, o, lse, do, causal)
    want = attention_grads_reference(q.double(), k.double(), v.double(), do.double(), is_causal=causal)
    tol = GRAD_TOLERANCES[dtype]
    return max(((g.double() - w).abs() / (tol.atol + tol.rtol * w.abs())).max().item() for g, w in zip(got, want))


impls = {
    "two kinds": lambda *a: m.attention_backward(*a, dq_atomics=False),
    "A: in problem7": lambda *a: m.attention_backward(*a, dq_atomics=True),
    "A scratch": backward_a,
    "A scratch rotated": functools.partial(backward_a, rotate=True),
    "C scratch (S^T)": functools.partial(backward_a, transposed=True),
    "C scratch rotated": functools.partial(backward_a, transposed=True, rotate=True),
    "C: experiment": lambda q, k, v, o, lse, do, c: exp.backward_atomic_dq(q, k, v, o, lse, do, c, (64, 64, 4, 3), True),
}
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
rows = []
print(torch.cuda.get_device_name(0), torch.__version__, triton.__version__, "bf16 B=4 H=16 D=64; backward ms, do_bench median")
for L in (4096, 8192, 16384):
    for causal in (False, True):
        torch.manual_seed(1)
        q, k, v, do = (torch.randn((4, 16, L, 64), device="cuda", dtype=torch.bfloat16) for _ in range(4))
        o, lse = m.attention_forward(q, k, v, causal)
        qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
            out_ = torch.nn.functional.scaled_dot_product_attention(qg, kg, vg, is_causal=causal)
        flash = do_bench(lambda: torch.autograd.grad(out_, (qg, kg, vg), do, retain_graph=True), return_mode="median")
        print(f"SDPA flash                    L={L:5d} causal={causal!s:5} {flash:8.3f}", flush=True)
        for name, fn in impls.items():
            try:
                e = err_units(fn, causal)
                ms = do_bench(functools.partial(fn, q, k, v, o, lse, do, causal), return_mode="median")
            except Exception as exc:
                print(f"{name:<29} L={L:5d} causal={causal!s:5} failed {type(exc).__name__}: {str(exc)[:300]}", flush=True)
                continue
            rows.append(dict(impl=name, L=L, causal=causal, ms=ms, flash_ms=flash, err=e))
            print(f"{name:<29} L={L:5d} causal={causal!s:5} {ms:8.3f} {flash / ms:5.2f}x flash  err {e:.2f}", flush=True)
        (out / "layouts.json").write_text(json.dumps(rows, indent=1))
