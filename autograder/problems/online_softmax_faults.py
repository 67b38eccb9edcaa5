"""The typical mistakes in an online softmax over key blocks, re-enacted exactly in float64.

Problem 3 teaches the recurrence in a Triton kernel; problem 2 writes it in PyTorch, and the
non-causal kernels built on it (problem 5) and the naive attention before it (problem 1) can
show the same mistakes. A wrong output that matches one re-enacted mistake element for element
names its cause.
"""
from __future__ import annotations

import math
from itertools import product

import torch

from ..checks import TOLERANCES
from ..diagnose import Finding, explains
from ..references import repeat_kv

# The faults a student typically introduces into the online softmax, by name.
FAULTS = {
    "unmasked_tail": "keys past the end of the sequence are not masked to -inf",
    "no_acc_rescale": "acc is not rescaled by alpha when the running max changes",
    "no_l_rescale": "l_i is not rescaled by alpha when the running max changes",
    "no_normalise": "the final division of acc by l_i is missing",
}
FIXES = {
    "unmasked_tail": "set the scores of keys with index >= seq_len_k to -inf before the row max "
                     "(the masked load pads them with 0, and exp2(0 - m) is not 0)",
    "no_acc_rescale": "multiply acc by alpha = exp2(m_old - m_new) before adding p @ v",
    "no_l_rescale": "multiply l_i by alpha = exp2(m_old - m_new) before adding the row sums of p",
    "no_normalise": "divide acc by l_i at the end",
}
BLOCK_SIZES = (64, 32, 128, 16)  # key-block sizes a kernel is likely to use, most likely first
# Mistakes that come together: the whole rescale forgotten, or the tail left unmasked and unnormalised.
COMBINED = (("no_acc_rescale", "no_l_rescale"), ("unmasked_tail", "no_normalise"))


def blockwise_attention(q, k, v, block_n: int, faults=frozenset(), scale=None):
    """Non-causal attention computed the FlashAttention way, one block of keys at a time.

    With no faults it equals `references.attention_reference`. Each name in `faults` (see
    FAULTS) reproduces one mistake exactly. Keys past the end are zero-padded, as a kernel's
    masked load pads them.
    """
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults: {sorted(unknown)}")
    q, k, v = q.double(), k.double(), v.double()
    hq, hkv = q.shape[1], k.shape[1]
    k, v = repeat_kv(k, hq // hkv), repeat_kv(v, hq // hkv)
    lk, d = k.shape[2], q.shape[3]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    padded = -(-lk // block_n) * block_n
    pad = padded - lk
    k = torch.nn.functional.pad(k, (0, 0, 0, pad))
    v = torch.nn.functional.pad(v, (0, 0, 0, pad))
    s_all = (q @ k.transpose(-1, -2)) * scale
    if "unmasked_tail" not in faults:
        s_all[..., lk:] = float("-inf")

    m = torch.full(q.shape[:-1], float("-inf"), dtype=torch.float64, device=q.device)
    l = torch.zeros_like(m)
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=torch.float64, device=q.device)
    for start in range(0, padded, block_n):
        s = s_all[..., start:start + block_n]
        m_new = torch.maximum(m, s.amax(-1))
        alpha = torch.exp(m - m_new)
        p = torch.exp(s - m_new[..., None])
        l = (l if "no_l_rescale" in faults else l * alpha) + p.sum(-1)
        acc = (acc if "no_acc_rescale" in faults else acc * alpha[..., None]) + p @ v[..., start:start + block_n, :]
        m = m_new
    out = acc if "no_normalise" in faults else acc / l[..., None]
    return out, m + torch.log(l)


def fault_matches(o, q, k, v, ref, atol, rtol) -> list[Finding]:
    """The re-enacted mistake (or pair of mistakes) that `o` matches, as Findings, or []."""
    lk = k.shape[2]
    combos = [(f,) for f in FAULTS] + list(COMBINED)
    for block_n, faults in product(BLOCK_SIZES, combos):
        if "unmasked_tail" in faults and lk % block_n == 0:
            continue  # no padded keys at this block size: the fault changes nothing
        if ("no_acc_rescale" in faults or "no_l_rescale" in faults) and lk <= block_n:
            continue  # a single block never rescales
        sim, _ = blockwise_attention(q, k, v, block_n, frozenset(faults))
        if explains(o, sim, ref, atol, rtol):
            return [Finding(f, f"{FAULTS[f]} (the output matches that mistake exactly, with "
                               f"{block_n}-key blocks): {FIXES[f]}") for f in faults]
    return []


def diagnose_online_softmax(o64, q, k, v, ref_o, case) -> list[Finding]:
    """A `diagnoses=` entry for checks.run_case: the online-softmax mistakes, for unmasked attention
    (the re-enactment has no causal mask, window or sinks)."""
    if case is not None and case.is_causal:
        return []
    tol = TOLERANCES[q.dtype]
    o = o64.detach().double().cpu()
    q, k, v = (t.detach().cpu() for t in (q, k, v))
    return fault_matches(o, q, k, v, ref_o.detach().double().cpu(), tol.atol, tol.rtol)
