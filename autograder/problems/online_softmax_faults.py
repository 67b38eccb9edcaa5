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
from ..recorded import is_recorded
from ..references import LOG2_E, repeat_kv

# The faults a student typically introduces into the online softmax, by name.
FAULTS = {
    "unmasked_tail": "keys past the end of the sequence are not masked to -inf",
    "no_acc_rescale": "acc is not rescaled by alpha when the running max changes",
    "no_l_rescale": "l_i is not rescaled by alpha when the running max changes",
    "no_normalise": "the final division of acc by l_i is missing",
}
# Mistakes a Triton kernel's update shows (problem 3 tries them after the four above): each is
# re-enacted at the kernel's key-block size, with the last block masked as the kernel masks it.
KERNEL_FAULTS = {
    "tail_keeps_pad": "the tail mask keeps one padded key (`<=` where `<` is meant)",
    "tail_drops_last": "the tail mask drops the last real key (it compares with seq_len_k - 1)",
    "no_max_update": "the running max m_i is never updated",
    "acc_rescale_after_add": "acc is rescaled by alpha after this block's p @ v was added",
    "p_unscaled": "p is computed from the unscaled scores (qk - m_new instead of qk * qk_scale - m_new)",
    "rowsum_scores": "l_i adds the row sums of the scores qk instead of the row sums of p",
    "scale_twice": "the scores are scaled twice (qk * qk_scale and then qk_scale again)",
}
# What to change, said without the line that does it (a diagnosis teaches; the answer stays the student's).
FIXES = {
    "unmasked_tail": "in the last block, give the keys past the end of the sequence a score of -inf before "
                     "the row max (the masked load pads them with 0, and exp2(0 - m) is not 0)",
    "no_acc_rescale": "rescale acc by alpha, the factor from the old max to the new one, before this block's "
                      "contribution is added",
    "no_l_rescale": "rescale l_i by alpha, the factor from the old max to the new one, before this block's "
                    "row sums are added",
    "no_normalise": "the output is the accumulated sum divided by the running sum of the weights",
    "tail_keeps_pad": "the first padded key has index seq_len_k: the tail mask must hide it too",
    "tail_drops_last": "the last real key has index seq_len_k - 1: the tail mask must keep it",
    "no_max_update": "carry the new max into the next block, or alpha is 0 and only the last block counts",
    "acc_rescale_after_add": "rescale acc before adding this block's contribution: only the old sum was "
                             "computed under the old max",
    "p_unscaled": "the probabilities need the same scaled scores as the max: m_new is in scaled units, and "
                  "the raw scores overflow exp2",
    "rowsum_scores": "l_i is a sum of probabilities: add the row sums of p, not of the scores",
    "scale_twice": "apply qk_scale to the scores once: either scale qk first and use it as it is, or scale "
                   "inside the max and the exp2",
}
ALL_FAULTS = {**FAULTS, **KERNEL_FAULTS}
BLOCK_SIZES = (64, 32, 128, 16)  # key-block sizes a kernel is likely to use, most likely first
# Mistakes that come together: the whole rescale forgotten, or the tail left unmasked and unnormalised.
COMBINED = (("no_acc_rescale", "no_l_rescale"), ("unmasked_tail", "no_normalise"))


def blockwise_attention(q, k, v, block_n: int, faults=frozenset(), scale=None, p_limit=None):
    """Non-causal attention computed the FlashAttention way, one block of keys at a time.

    With no faults it equals `references.attention_reference`. Each name in `faults` (see
    FAULTS and KERNEL_FAULTS) reproduces one mistake exactly. Keys past the end are
    zero-padded, as a kernel's masked load pads them. `p_limit`: the largest p the kernel can
    hold (the range of the dtype p is cast to for p @ v); output rows where some p passes it
    come back NaN, as the kernel's do.
    """
    unknown = set(faults) - set(ALL_FAULTS)
    if unknown:
        raise ValueError(f"unknown faults: {sorted(unknown)}")
    q, k, v = q.double(), k.double(), v.double()
    hq, hkv = q.shape[1], k.shape[1]
    k, v = repeat_kv(k, hq // hkv), repeat_kv(v, hq // hkv)
    lk, d = k.shape[2], q.shape[3]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    if "scale_twice" in faults:  # qk * qk_scale * qk_scale in base 2 is this natural-log scale
        scale = scale * scale * LOG2_E
    padded = -(-lk // block_n) * block_n
    pad = padded - lk
    k = torch.nn.functional.pad(k, (0, 0, 0, pad))
    v = torch.nn.functional.pad(v, (0, 0, 0, pad))
    s_all = (q @ k.transpose(-1, -2)) * scale
    if "unmasked_tail" not in faults:
        # The kernel masks only its last block, and only when that block is partial.
        first_masked = lk + 1 if "tail_keeps_pad" in faults else lk
        if "tail_drops_last" in faults and pad:
            first_masked = lk - 1
        s_all[..., first_masked:] = float("-inf")
    overflow = torch.zeros(q.shape[:-1], dtype=torch.bool, device=q.device)

    m = torch.full(q.shape[:-1], float("-inf"), dtype=torch.float64, device=q.device)
    l = torch.zeros_like(m)
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=torch.float64, device=q.device)
    for start in range(0, padded, block_n):
        s = s_all[..., start:start + block_n]
        m_new = torch.maximum(m, s.amax(-1))
        alpha = torch.exp(m - m_new)
        if "p_unscaled" in faults:  # exp2(qk - m_new): raw scores are s / scale, in base 2 units
            p = torch.exp(math.log(2) * s / scale - m_new[..., None])
        else:
            p = torch.exp(s - m_new[..., None])
        if p_limit is not None:
            overflow |= (p > p_limit).any(-1)
        row_sum = (s / scale).sum(-1) if "rowsum_scores" in faults else p.sum(-1)
        l = (l if "no_l_rescale" in faults else l * alpha) + row_sum
        pv = p @ v[..., start:start + block_n, :]
        if "acc_rescale_after_add" in faults:
            acc = (acc + pv) * alpha[..., None]
        else:
            acc = (acc if "no_acc_rescale" in faults else acc * alpha[..., None]) + pv
        if "no_max_update" not in faults:
            m = m_new
    out = acc if "no_normalise" in faults else acc / l[..., None]
    out = out.masked_fill(overflow[..., None], float("nan"))
    return out, m + torch.log(l)


# Re-enacting a mistake costs as much as the attention itself, and a diagnosis tries dozens. Each query
# row is computed on its own, so a few rows re-enacted first rule most of them out.
_SCREEN_ROWS = 16
_GENUINE_BLOCKWISE = blockwise_attention


def _screening() -> bool:
    """Screen only where blockwise_attention is this module's own: not while `autograder publish`
    records its calls (a screened-out mistake would go unrecorded), and not in the student edition,
    where it answers from that recording (which holds no screening rows)."""
    return blockwise_attention is _GENUINE_BLOCKWISE and not is_recorded(blockwise_attention)


def _screen_rows(o, ref):
    """The query rows (dim 2) where `o` is farthest from the right answer, at most _SCREEN_ROWS."""
    row_err = (o - ref).abs().nan_to_num(math.inf).amax(-1).flatten(0, 1).amax(0)   # (Lq,)
    return row_err.topk(min(_SCREEN_ROWS, row_err.numel())).indices.sort().values


def _may_explain(o, q, k, v, rows, block_n, faults, atol, rtol) -> bool:
    """False only where explains(o, the full re-enactment, ref) must be False: rows of a close match
    are close, and ||o - sim|| over some rows is at most ||o - sim|| over all, which a match keeps
    below 1% of ||sim|| < ||o|| / 0.99. (rows None: no screening, every mistake may match.)"""
    if rows is None:
        return True
    sim, _ = blockwise_attention(q[:, :, rows], k, v, block_n, frozenset(faults))
    o_rows = o[:, :, rows]
    if o_rows.shape == sim.shape and bool(torch.isclose(o_rows, sim, atol=atol, rtol=rtol).all()):
        return True
    return float((o_rows - sim).norm()) < 0.0102 * float(o.norm())


def fault_matches(o, q, k, v, ref, atol, rtol) -> list[Finding]:
    """The re-enacted mistake (or pair of mistakes) that `o` matches, as Findings, or []."""
    lk = k.shape[2]
    rows = _screen_rows(o, ref) if _screening() else None
    combos = [(f,) for f in FAULTS] + list(COMBINED)
    for block_n, faults in product(BLOCK_SIZES, combos):
        if "unmasked_tail" in faults and lk % block_n == 0:
            continue  # no padded keys at this block size: the fault changes nothing
        if ("no_acc_rescale" in faults or "no_l_rescale" in faults) and lk <= block_n:
            continue  # a single block never rescales
        if not _may_explain(o, q, k, v, rows, block_n, faults, atol, rtol):
            continue
        sim, _ = blockwise_attention(q, k, v, block_n, frozenset(faults))
        if explains(o, sim, ref, atol, rtol):
            return [Finding(f, f"{FAULTS[f]} (the output matches that mistake exactly, with "
                               f"{block_n}-key blocks): {FIXES[f]}") for f in faults]
    return []


def _explains_with_overflow(o, q, k, v, ref, block_n, faults, limit, atol, rtol) -> bool:
    """Does `o` match the re-enacted mistake, rows where the kernel's p overflows included? Rows
    whose p passes the limit by a factor of 4 must be NaN/inf, rows 4x below it must match; rows
    in between are left out (float32 exp2 and the cast of p decide them)."""
    lo, _ = blockwise_attention(q, k, v, block_n, frozenset(faults), p_limit=limit * 4)
    hi, _ = blockwise_attention(q, k, v, block_n, frozenset(faults), p_limit=limit / 4)
    sure_bad, maybe_bad = lo.isnan().any(-1), hi.isnan().any(-1)
    o_bad = ~torch.isfinite(o).all(-1)
    if not bool(maybe_bad.any()):
        return not bool(o_bad.any()) and explains(o, hi, ref, atol, rtol)
    if not bool(o_bad.any()) or bool((sure_bad & ~o_bad).any()) or bool((o_bad & ~maybe_bad).any()):
        return False
    good = ~maybe_bad
    # Every row overflowing says only that something overflows: finite rows must match as well.
    return bool(good.any()) and explains(o[good], hi[good], ref[good], atol, rtol)


def _uninformative(sim) -> bool:
    """NaN, inf, zeros or one value everywhere: many mistakes give that, so it names none."""
    return not bool(torch.isfinite(sim).all()) or sim.numel() == 0 or bool((sim == sim.flatten()[0]).all())


def kernel_fault_matches(o, q, k, v, ref, atol, rtol) -> list[Finding]:
    """fault_matches, then the mistakes of a Triton kernel's update (KERNEL_FAULTS), each at the
    key-block sizes a kernel uses."""
    found = fault_matches(o, q, k, v, ref, atol, rtol)
    if found:
        return found
    if bool((o == 0).all()):
        return [Finding("all_zero", "every output element is 0, whatever the inputs: either acc stays 0 "
                                    "(rescaled by alpha = 0 after p @ v was added, while the old max is -inf) "
                                    "or l_i is infinite (a sum over scores that include the masked -inf); "
                                    "rescale acc before adding p @ v, and add the row sums of p to l_i")]
    lk = k.shape[2]
    rows = _screen_rows(o, ref) if _screening() else None
    # p is cast to v's dtype for tl.dot and computed by a float32 exp2: the smaller range bounds it.
    limit = min(torch.finfo(v.dtype).max if v.dtype.is_floating_point else math.inf, torch.finfo(torch.float32).max)
    for block_n, fault in product(BLOCK_SIZES, KERNEL_FAULTS):
        if fault.startswith("tail_") and lk % block_n == 0:
            continue  # no partial block at this block size: the kernel masks nothing
        if fault in ("no_max_update", "acc_rescale_after_add") and lk <= block_n:
            continue  # one block: both leave the output right (the LSE shows no_max_update)
        if fault == "p_unscaled":
            matched = _explains_with_overflow(o, q, k, v, ref, block_n, {fault}, limit, atol, rtol)
        else:
            if not _may_explain(o, q, k, v, rows, block_n, {fault}, atol, rtol):
                continue
            sim, _ = blockwise_attention(q, k, v, block_n, frozenset({fault}))
            if _uninformative(sim):
                continue
            matched = explains(o, sim, ref, atol, rtol)
        if matched:
            return [Finding(fault, f"{KERNEL_FAULTS[fault]} (the output matches that mistake exactly, with "
                                   f"{block_n}-key blocks): {FIXES[fault]}")]
    return []


def _match_unmasked(matcher, o64, q, k, v, ref_o, case) -> list[Finding]:
    """Run `matcher` on CPU float64 copies, for unmasked attention only (the re-enactments have no
    causal mask, window or sinks), at the tolerance of the inputs' dtype."""
    if case is not None and case.is_causal:
        return []
    tol = TOLERANCES[q.dtype]
    q, k, v = (t.detach().cpu() for t in (q, k, v))
    return matcher(o64.detach().double().cpu(), q, k, v, ref_o.detach().double().cpu(), tol.atol, tol.rtol)


def diagnose_kernel_online_softmax(o64, q, k, v, ref_o, case) -> list[Finding]:
    """diagnose_online_softmax with the mistakes of a Triton kernel's update added (KERNEL_FAULTS)."""
    return _match_unmasked(kernel_fault_matches, o64, q, k, v, ref_o, case)


def diagnose_kernel_lse(lse64, q, k, v, ref_lse, case) -> list[Finding]:
    """A `lse_diagnoses=` entry for checks.run_case: a log-sum-exp that matches one of the kernel
    mistakes (a mistake can leave the output within tolerance and still show in the LSE: a padded
    key kept or the last real key dropped)."""
    if case is not None and case.is_causal:
        return []
    from ..checks import LSE_TOLERANCE

    lse = lse64.detach().double().cpu()
    q, k, v = (t.detach().cpu() for t in (q, k, v))
    lk = k.shape[2]
    for block_n, fault in product(BLOCK_SIZES, ("unmasked_tail", "tail_keeps_pad", "tail_drops_last")):
        if lk % block_n == 0:
            continue
        _, sim = blockwise_attention(q, k, v, block_n, frozenset({fault}))
        if not bool(torch.isfinite(sim).all()):
            continue  # 0/0 or log(0) rows: many mistakes give NaN or -inf, they name none
        same_inf = bool((lse.isinf() == sim.isinf()).all()) and bool((lse[lse.isinf()] == sim[sim.isinf()]).all())
        finite = torch.isfinite(sim)
        if same_inf and bool(torch.isclose(lse[finite], sim[finite], atol=LSE_TOLERANCE.atol,
                                           rtol=LSE_TOLERANCE.rtol).all()):
            return [Finding(fault, f"{ALL_FAULTS[fault]} (the log-sum-exp matches that mistake exactly, with "
                                   f"{block_n}-key blocks): {FIXES[fault]}")]
    return []


def diagnose_online_softmax(o64, q, k, v, ref_o, case) -> list[Finding]:
    """A `diagnoses=` entry for checks.run_case: the online-softmax mistakes, for unmasked attention."""
    return _match_unmasked(fault_matches, o64, q, k, v, ref_o, case)
