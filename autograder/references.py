"""Reference attention with the seed's semantics, computed in float64.

Shapes are (B, H, L, D). K/V may have fewer heads than Q (grouped-query attention):
query head h reads K/V head h // (Hq // Hkv), which is what repeating each K/V head
Hq // Hkv times does. The softmax scale is 1/sqrt(D). The log-sum-exp is in natural log.
"""
from __future__ import annotations

import math

import torch

LOG2_E = 1.4426950408889634


def create_mask_bool(seq_len: int, window_size: int, sink_size: int, device=None) -> torch.Tensor:
    """True where query i may attend to key j (the seed's rules).

    sliding window:  i - (window_size - 1) <= j <= i
    sink:            j < sink_size and j <= i
    """
    idx = torch.arange(seq_len, device=device)
    row = idx.unsqueeze(1)
    col = idx.unsqueeze(0)
    sliding = (col <= row) & (col >= row - (window_size - 1))
    sink = (col < sink_size) & (col <= row)
    return sliding | sink


def repeat_kv(x: torch.Tensor, num_groups: int) -> torch.Tensor:
    """(B, Hkv, L, D) -> (B, Hkv * num_groups, L, D), each K/V head repeated num_groups times."""
    if num_groups == 1:
        return x
    b, h_kv, n, d = x.shape
    return x.unsqueeze(2).expand(b, h_kv, num_groups, n, d).reshape(b, h_kv * num_groups, n, d)


def attention_mask(seq_len: int, is_causal: bool, window_size=None, sink_size=None, device=None):
    """The boolean mask the seed's naive_attention applies, or None for full attention."""
    if not is_causal:
        return None
    window = seq_len if window_size is None else window_size
    return create_mask_bool(seq_len, window_size=window, sink_size=sink_size or 0, device=device)


def attention_reference(q, k, v, is_causal=False, window_size=None, sink_size=None, scale=None):
    """Exact attention in float64. Returns (O in q.dtype's shape as float64, LSE float64 (B, H, Lq)).

    Computed one (batch, head) slice at a time so memory stays O(L^2) for one slice.
    """
    b, hq, lq, d = q.shape
    hkv = k.shape[1]
    if hq % hkv:
        raise ValueError(f"query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    k = repeat_kv(k, hq // hkv)
    v = repeat_kv(v, hq // hkv)
    mask = attention_mask(lq, is_causal, window_size, sink_size, device=q.device)
    out = torch.empty(b, hq, lq, v.shape[-1], dtype=torch.float64, device=q.device)
    lse = torch.empty(b, hq, lq, dtype=torch.float64, device=q.device)
    for bi in range(b):
        for hi in range(hq):
            s = (q[bi, hi].double() @ k[bi, hi].double().T) * scale
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf"))
            lse[bi, hi] = torch.logsumexp(s, dim=-1)
            out[bi, hi] = torch.softmax(s, dim=-1) @ v[bi, hi].double()
    return out, lse


def attention_grads_reference(q, k, v, do, is_causal=False, window_size=None, sink_size=None, scale=None):
    """(dq, dk, dv) in float64: autograd of the float64 reference attention for the loss sum(O * do).

    K/V heads shared by a group of query heads (GQA) get the sum of the group's gradients, as
    autograd through repeat_kv gives them. One (batch, K/V head) slice at a time, so memory stays
    O(L^2) for one slice.
    """
    b, hq, lq, d = q.shape
    hkv = k.shape[1]
    group = hq // hkv
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    mask = attention_mask(lq, is_causal, window_size, sink_size, device=q.device)
    grads = [torch.empty(t.shape, dtype=torch.float64, device=q.device) for t in (q, k, v)]
    for bi in range(b):
        for hi in range(hkv):
            heads = slice(hi * group, (hi + 1) * group)
            qs = q[bi, heads].detach().double().requires_grad_()
            ks = k[bi, hi].detach().double().requires_grad_()
            vs = v[bi, hi].detach().double().requires_grad_()
            with torch.enable_grad():
                s = (qs @ ks.T) * scale
                if mask is not None:
                    s = s.masked_fill(~mask, float("-inf"))
                o = torch.softmax(s, dim=-1) @ vs
                dq, dk, dv = torch.autograd.grad(o, (qs, ks, vs), do[bi, heads].detach().double())
            grads[0][bi, heads], grads[1][bi, hi], grads[2][bi, hi] = dq, dk, dv
    return tuple(grads)


def naive_attention(q, k, v, is_causal=False, window_size=None, sink_size=None):
    """The seed's materialising PyTorch attention, in the input dtype: the 'naive' peer.

    It builds the whole (L x L) score matrix per head, which is what FlashAttention avoids.
    """
    hq, hkv, lq, d = q.shape[1], k.shape[1], q.shape[2], q.shape[3]
    k = repeat_kv(k, hq // hkv)
    v = repeat_kv(v, hq // hkv)
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
    mask = attention_mask(lq, is_causal, window_size, sink_size, device=q.device)
    if mask is not None:
        s.masked_fill_(~mask, float("-inf"))
    p = torch.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype)
    return p @ v, torch.logsumexp(s.float(), dim=-1)
