"""A wrong Delta, read from the gradients themselves (problems 7 and 8).

Delta_i = rowsum(dO * O)_i enters the backward only through dS = P * (dP - Delta), one number per
query row, and dV = P^T dO does not use it. A backward whose Delta is off by e_i in row i, whatever
made it so (a wrong product, the wrong tensor, a sum over part of the row), returns

    dQ_i = dQ_ref,i - scale * e_i * (P K)_i        for each query row i
    dK   = dK_ref   - scale * P^T diag(e) Q        (summed over a group's query heads)

with dV right. `wrong_delta` fits e to the student's dQ (least squares, one number per row),
predicts dK from it, and names the mistake only when that prediction explains both dQ and dK and
dV is right: any wrong Delta gets its cause, not only the forms a problem re-enacts.
"""
from __future__ import annotations

import torch

from ..diagnose import Finding, explains

CODE = "delta_wrong"
SIGN_CODE = "delta_sign"
SIGN_MESSAGE = ("dS = P * (dP + Delta): Delta is added where it is subtracted (dV is right, and dQ and dK fit a "
                "Delta of the opposite sign in every row). The softmax's Jacobian gives dS = P * (dP - Delta), "
                "with Delta_i = sum_d O_id dO_id")
MESSAGE = ("Delta is wrong: dV is right, and dQ and dK are off exactly as a Delta that is wrong by one number "
           "per query row makes them (the gradients fit a Delta off by up to {worst:.3g}). Delta_i = "
           "sum_d O_id dO_id, the product of O and dO summed over the whole head dimension of row i, is computed "
           "once by the preprocess; dS = P * (dP - Delta)")


def wrong_delta(got: dict, ref: dict, p, q, k, scale: float, group: int, tol, delta=None) -> list[Finding]:
    """[Finding(CODE, ...)] when one wrong Delta per query row explains the student's gradients, else [].

    got, ref: {"dq", "dk", "dv"}, dK and dV per K/V head. p: the right P, masked, (B, Hq, L, L); q and k:
    (B, Hq, L, D), K repeated for each query head; all float64. group: query heads per K/V head.
    tol: the dtype's gradient tolerances (atol, rtol). delta: the right Delta, (B, Hq, L), to tell a Delta of
    the opposite sign (SIGN_CODE) from any other wrong one."""
    dq, dk, dv = (got[name].detach().to(p.device, torch.float64) for name in ("dq", "dk", "dv"))
    ref_dq, ref_dk, ref_dv = (ref[name].detach().to(p.device, torch.float64) for name in ("dq", "dk", "dv"))
    if not explains(dv, ref_dv, ref_dv, tol.atol, tol.rtol):
        return []
    per_unit = -scale * (p @ k)           # how dQ's row i moves per unit of e_i
    e = ((dq - ref_dq) * per_unit).sum(-1) / (per_unit * per_unit).sum(-1).clamp_min(1e-300)
    if not bool(torch.isfinite(e).all()):
        return []
    fitted_dq = ref_dq + e[..., None] * per_unit
    b, hq, n, d = q.shape
    dk_shift = -scale * torch.einsum("bhik,bhi,bhid->bhkd", p, e, q)   # -scale P^T diag(e) Q
    fitted_dk = ref_dk + dk_shift.reshape(b, hq // group, group, n, d).sum(2)
    if (explains(dq, fitted_dq, ref_dq, tol.atol, tol.rtol) and explains(dk, fitted_dk, ref_dk, tol.atol, tol.rtol)
            and not explains(dq, ref_dq, ref_dq, tol.atol, tol.rtol)):
        if delta is not None:
            flipped = -2.0 * delta.to(e.device, torch.float64)   # e = Delta' - Delta with Delta' = -Delta
            if float((e - flipped).abs().max()) <= 0.02 * float(flipped.abs().max()) + tol.atol:
                return [Finding(SIGN_CODE, SIGN_MESSAGE)]
        return [Finding(CODE, MESSAGE.format(worst=float(e.abs().max())))]
    return []
