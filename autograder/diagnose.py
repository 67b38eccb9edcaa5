"""Turn a wrong output into a likely cause.

The strongest evidence is an exact match: a typical mistake is re-enacted in float64 (a
wrong scale, a swapped head; each problem module re-enacts its own mistakes and passes them to
`checks.run_case` as `diagnoses`) and the candidate is compared with that re-enactment.
Patterns (NaNs, rows off by a constant factor, which rows are wrong) fill in where no
re-enactment matches.
"""
from __future__ import annotations

import math
from itertools import product

import torch

from .references import LOG2_E, attention_reference
from .verdict import Finding  # problem modules import it from here too


def _close(a, b, atol, rtol):
    return a.shape == b.shape and bool(torch.isclose(a, b, atol=atol, rtol=rtol).all())


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _explains(o, sim, ref, atol, rtol) -> bool:
    """Does re-enacted mistake `sim` explain `o`? Element-wise close, or (for outputs whose
    scale differs from the right one, such as an un-normalised acc) close in norm and far
    closer to `sim` than to the right answer."""
    if _close(o, sim, atol, rtol):
        return True
    to_sim = _rel(o, sim)
    return to_sim < 1e-2 and to_sim < 0.1 * _rel(o, ref)


explains = _explains  # public name: problem modules match their own re-enacted mistakes with it


def locate(bad: torch.Tensor) -> str:
    """Describe where a (B, H, L, D) boolean error mask is set."""
    idx = bad.nonzero()
    if idx.numel() == 0:
        return "nowhere"
    b, h, row, col = (int(x) for x in idx[0])
    rows_bad = bad.any(-1)
    n_rows = int(rows_bad.sum())
    total_rows = rows_bad.numel()
    first_row = int(rows_bad.nonzero()[:, 2].min())
    where = f"first at batch {b}, head {h}, row {row}, column {col}; {n_rows} of {total_rows} rows wrong"
    if first_row > 0:
        where += f", none before row {first_row}"
    return where


def non_finite(o: torch.Tensor) -> Finding | None:
    bad = ~torch.isfinite(o)
    if not bad.any():
        return None
    n = int(bad.sum())
    if bool(bad.all()):
        return Finding("all_nan", "every output element is NaN or inf: usually l_i stayed 0 (nothing was "
                                  "accumulated, e.g. an empty update) or -inf - (-inf) appeared in exp2")
    return Finding("some_nan", f"{n} output elements are NaN or inf ({locate(bad)}): look for a division by "
                               "l_i = 0 or exp2(-inf - (-inf)) in rows whose scores are all masked")


def _scale_match(o, q, k, v, ref, atol, rtol, mask_kwargs):
    d = q.shape[-1]
    right = 1.0 / math.sqrt(d)
    candidates = {
        "1 (no scaling)": 1.0,
        "1/D": 1.0 / d,
        "log2(e)/sqrt(D), i.e. exp was used where exp2 was meant": right * LOG2_E,
        "1/(log2(e) sqrt(D)), i.e. exp2 was used on natural-log scores": right / LOG2_E,
        "log2(e)^2/sqrt(D), i.e. the scale was applied twice": right * LOG2_E ** 2,
        "-1/sqrt(D), a negative scale (the scores' sign is flipped, so the softmax favours the smallest)": -right,
        "sqrt(D) (the scores divided by the scale, not multiplied)": 1.0 / right,
    }
    for name, scale in candidates.items():
        sim, _ = attention_reference(q, k, v, scale=scale, **mask_kwargs)
        if _explains(o, sim, ref, atol, rtol):
            return Finding("wrong_scale", f"the scores are scaled by {name} instead of 1/sqrt(D) = {right:.4g}")
    return None


# The fitted scale's search: c x 1/sqrt(D) for c = +-2^(e/4), e from -24 to 32 (1/64 to 256), then a
# golden-section refinement between the best grid point's neighbours.
_SCALE_GRID = sorted(sign * 2.0 ** (e / 4) for e in range(-24, 33) for sign in (1.0, -1.0))
_GOLDEN_STEPS = 30   # the bracket shrinks to 0.618^30 = 5e-7 of its width


def _fitted_scale(o, q, k, v, ref, atol, rtol, case):
    """The output is attention at a scale none of _scale_match's candidates names (a constant
    mistyped, or a formula written wrong): found by a search on the worst rows of the worst
    (batch, head), then checked on the whole output. Only torch ops on the case's own tensors (and
    the case's mask), so that it runs where the reference is recorded (the student edition)."""
    from .references import repeat_kv

    if o.ndim != 4 or o.shape != ref.shape or not bool(torch.isfinite(o).all()):
        return None
    d = q.shape[-1]
    right = 1.0 / math.sqrt(d)
    scaled = _scores(q, k, case)                       # right x q k^T, -inf where masked
    hidden = torch.isneginf(scaled)
    base = scaled.masked_fill(hidden, 0.0)
    values = repeat_kv(v.detach().double().cpu(), q.shape[1] // v.shape[1])
    row_err = (o - ref).abs().amax(-1)                 # (B, H, L)
    b, h = divmod(int(row_err.flatten(0, 1).amax(-1).argmax()), o.shape[1])
    rows = row_err[b, h].topk(min(64, o.shape[2])).indices
    sub_base, sub_hidden, sub_o = base[b, h, rows], hidden[b, h, rows], o[b, h, rows]

    def attend(c, logits_base, mask, vals):
        logits = (c * logits_base).masked_fill(mask, float("-inf"))
        return torch.softmax(logits, dim=-1).nan_to_num(0.0) @ vals

    def error(c):
        return float((attend(c, sub_base, sub_hidden, values[b, h]) - sub_o).abs().max())

    errors = [error(c) for c in _SCALE_GRID]
    i = min(range(len(errors)), key=errors.__getitem__)
    lo, hi = _SCALE_GRID[max(i - 1, 0)], _SCALE_GRID[min(i + 1, len(_SCALE_GRID) - 1)]
    if lo * hi < 0:  # the neighbours straddle zero: stay on the best point's side
        lo, hi = (_SCALE_GRID[i] / 2 ** 0.25, _SCALE_GRID[i] * 2 ** 0.25)
        lo, hi = min(lo, hi), max(lo, hi)
    ratio = (math.sqrt(5) - 1) / 2
    a, z = lo, hi
    m1, m2 = z - ratio * (z - a), a + ratio * (z - a)
    e1, e2 = error(m1), error(m2)
    for _ in range(_GOLDEN_STEPS):  # each step keeps one of the two inner points: one new error each
        if e1 < e2:
            z, m2, e2 = m2, m1, e1
            m1 = z - ratio * (z - a)
            e1 = error(m1)
        else:
            a, m1, e1 = m1, m2, e2
            m2 = a + ratio * (z - a)
            e2 = error(m2)
    c = (a + z) / 2
    if abs(c - 1.0) < 1e-3:
        return None
    sim = attend(c, base, hidden, values)
    if not _explains(o, sim, ref, atol, rtol):
        return None
    return Finding("wrong_scale", f"the scores are scaled by {c * right:.4g} ({c:.3g} x 1/sqrt(D)) instead of "
                                  f"1/sqrt(D) = {right:.4g}: check how the scale is computed")


def _swapped_slices(o, ref, atol, rtol):
    b_n, h_n = o.shape[:2]
    notes = []
    for b, h in product(range(b_n), range(h_n)):
        if _close(o[b, h], ref[b, h], atol, rtol):
            continue
        for b2, h2 in product(range(b_n), range(h_n)):
            if (b2, h2) != (b, h) and _explains(o[b, h], ref[b2, h2], ref[b, h], atol, rtol):
                notes.append(f"(batch {b}, head {h}) holds the answer for (batch {b2}, head {h2})")
                break
    if notes:
        return Finding("wrong_indexing", "outputs land in the wrong batch/head: " + "; ".join(notes[:3])
                       + ": check the batch and head offsets of the pointers")
    return None


def _scores(q, k, case):
    """The scaled scores in float64 with the case's mask (-inf where masked), K repeated for GQA."""
    from .references import attention_mask, repeat_kv

    q, k = q.detach().double().cpu(), k.detach().double().cpu()
    k = repeat_kv(k, q.shape[1] // k.shape[1])
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = attention_mask(q.shape[2], **(case.mask_kwargs if case is not None else {"is_causal": False}))
    return scores.masked_fill(~mask, float("-inf")) if mask is not None else scores


# How the final step can combine the right acc and l wrongly (acc alone is no_normalise, a problem's own).
_FINALIZE = {"*": lambda acc, l: acc * l, "-": lambda acc, l: acc - l, "+": lambda acc, l: acc + l}


def _finalize_match(o, q, k, ref, atol, rtol, case):
    """The output is the right un-normalised acc combined with the right l by *, - or + instead of /.

    Re-enacted from the reference: with the row max m, l = sum_j exp(s_j - m) and acc = sum_j exp(s_j - m) v_j
    = O * l, whatever the block size (exact arithmetic)."""
    scores = _scores(q, k, case)
    row_max = scores.amax(-1, keepdim=True)
    if not bool(torch.isfinite(row_max).all()):
        return None  # a row with no visible key: no l to re-enact
    l = torch.exp(scores - row_max).sum(-1, keepdim=True)
    acc = ref * l
    for op, combine in _FINALIZE.items():
        if _explains(o, combine(acc, l), ref, atol, rtol):
            return Finding("finalize_not_divided",
                           f"the output is acc {op} l_i, with acc (the un-normalised sum of p @ V) and l_i (the sum "
                           "of p) both right: the final step must divide acc by l_i")
    return None


MIX_BLOCK_SIZES = (64, 32, 128, 16)  # key-block sizes a kernel is likely to use, most likely first


def _block_mix_match(o, q, k, v, ref, atol, rtol, case):
    """Each output row is a weighted average of the key blocks' own softmax outputs, with positive weights
    that are not the right ones: acc and l_i are rescaled by the same wrong factor alpha.

    Measured per row: with block b's un-normalised sums acc_b = sum_j exp(s_j - m_b) v_j and
    l_b = sum_j exp(s_j - m_b), a right kernel gives o = sum_b w_b acc_b / sum_b w_b l_b with w_b = exp(m_b - m);
    the weights that fit o best are found (the null vector of [acc_b - o l_b]) and the fit must explain o.
    Tried only with at most D/4 blocks, so that a fit is no coincidence."""
    from .references import repeat_kv

    if _close(o, ref, atol, rtol):
        return None  # the right weights
    scores = _scores(q, k, case)
    v = repeat_kv(v.detach().double().cpu(), q.shape[1] // v.shape[1])
    n_keys, d = scores.shape[-1], v.shape[-1]
    if not bool(torch.isfinite(scores.amax(-1)).all()):
        return None
    o_rows = o.reshape(-1, d)
    for block_n in MIX_BLOCK_SIZES:
        n_blocks = -(-n_keys // block_n)
        if n_blocks < 2 or 4 * n_blocks > d:
            continue
        accs, sums = [], []
        for start in range(0, n_keys, block_n):
            s = scores[..., start:start + block_n]
            m_b = s.amax(-1, keepdim=True).clamp_min(-1e300)  # a fully masked block: weights exp(-inf) = 0
            e = torch.exp(s - m_b)
            accs.append((e @ v[..., start:start + block_n, :]).reshape(-1, d))
            sums.append(e.sum(-1).reshape(-1))
        acc_b, l_b = torch.stack(accs, -1), torch.stack(sums, -1)            # (rows, D, nb), (rows, nb)
        system = acc_b - o_rows[..., None] * l_b[:, None, :]
        # A block a row cannot see (causal) adds nothing: a large column of its own direction (a unit vector,
        # one per block) keeps its weight 0.
        unseen = (l_b == 0)[:, None, :].expand_as(system)
        big = 1e6 * (1 + system.abs().amax((1, 2), keepdim=True)) * torch.eye(d, n_blocks, dtype=system.dtype)
        system = torch.where(unseen, big, system)
        # The right singular vectors of the tall (D x nb) system are those of its QR factor's small R
        # (nb x nb): the SVD then runs on nb x nb matrices, not D x nb ones.
        r = torch.linalg.qr(system, mode="r").R
        w = torch.linalg.svd(r).Vh[:, -1, :]                                # (rows, nb), unit norm
        w = w * torch.sign(w.sum(-1, keepdim=True))
        if bool((w < -1e-3).any()):
            continue  # weights must be positive: exp of something
        denom = (w * l_b).sum(-1, keepdim=True)
        sim = ((acc_b * w[:, None, :]).sum(-1) / denom).reshape(o.shape)
        if _explains(o, sim, ref, atol, rtol):
            # A block some row sees but weighs (next to) nothing: it may have been skipped rather than mis-scaled.
            seen = l_b > 0
            dropped = bool(((w / w.amax(-1, keepdim=True).clamp_min(1e-300) < 1e-6) & seen).any())
            return Finding("alpha_wrong",
                           f"each output row is a weighted average of the {block_n}-key blocks' own softmax outputs "
                           "with the wrong weights, the same for acc and for l_i: alpha, the factor that carries "
                           "both from the old max to the new one, must be exp(m_old - m_new), exp2 of the difference "
                           "when the maxima are in base-2 units"
                           + ("; some rows give a block they see no weight at all: a key block skipped would do "
                              "that too" if dropped else ""))
    return None


def _row_scaling(o, ref):
    """Rows that are a constant multiple (not 1) of the right rows."""
    denom = (ref * ref).sum(-1)
    ratio = (o * ref).sum(-1) / denom.clamp_min(1e-30)
    resid = (o - ratio[..., None] * ref).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-30)
    if bool((resid < 1e-2).all()) and bool(((ratio - 1).abs() > 1e-2).any()):
        lo, hi = float(ratio.min()), float(ratio.max())
        return Finding("row_scaled", f"each output row is the right row times a factor between {lo:.3g} and "
                                     f"{hi:.3g}: the normaliser l_i is wrong or not applied")
    return None


def diagnose_output(o, q, k, v, ref_o, atol, rtol, case=None) -> list[Finding]:
    """Likely causes for an output `o` that does not match `ref_o` (both compared in float64).

    `case` (an inputs.Case) says which mask the reference used.
    """
    mask_kwargs = case.mask_kwargs if case is not None else {}
    o = o.detach().double().cpu()
    q, k, v = (t.detach().cpu() for t in (q, k, v))
    ref = ref_o.detach().double().cpu()
    nf = non_finite(o)
    if nf:
        return [nf]
    for probe in (lambda: _swapped_slices(o, ref, atol, rtol),
                  lambda: _scale_match(o, q, k, v, ref, atol, rtol, mask_kwargs),
                  lambda: _fitted_scale(o, q, k, v, ref, atol, rtol, case),
                  lambda: _finalize_match(o, q, k, ref, atol, rtol, case),
                  lambda: _block_mix_match(o, q, k, v, ref, atol, rtol, case),
                  lambda: _row_scaling(o, ref)):
        found = probe()
        if found:
            return found if isinstance(found, list) else [found]
    return []


def diagnose_lse(lse, ref_lse, q, k, atol, case=None) -> list[Finding]:
    """Likely causes for a wrong log-sum-exp when the output itself is right."""
    from .references import attention_mask, repeat_kv

    lse = lse.detach().double().cpu()
    ref = ref_lse.detach().double().cpu()
    if not bool(torch.isfinite(lse).all()):
        return [Finding("lse_nan", "the log-sum-exp has NaN/inf entries: is l_i 0 for some rows?")]
    scale = 1.0 / math.sqrt(q.shape[-1])
    k = repeat_kv(k.double().cpu(), q.shape[1] // k.shape[1])
    scores = (q.double().cpu() @ k.transpose(-1, -2)) * scale
    mask = attention_mask(q.shape[2], **(case.mask_kwargs if case is not None else {"is_causal": False}))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    row_max = scores.amax(-1)
    candidates = {
        "lse_base2": (ref * LOG2_E, "the log-sum-exp is in base 2: multiply by ln(2) to return natural log"),
        "lse_no_max": (ref - row_max, "the log-sum-exp misses the running max m_i: the sum l_i was measured "
                                      "against it"),
        "lse_no_sum": (row_max, "the log-sum-exp misses the log of the running sum l_i: the max alone is only "
                                "its largest term"),
    }
    for code, (want, msg) in candidates.items():
        if _close(lse, want, atol * 4, 1e-4):
            return [Finding(code, msg)]
    wrong_max = _lse_wrong_max(lse, ref, row_max, atol)
    if wrong_max:
        return [wrong_max]
    formula = _lse_wrong_formula(lse, ref, row_max, atol)
    return [formula] if formula else []


LN_2 = math.log(2)
# Coefficients (a, b, c) of a wrong lse = a max + b ln(sum) + c that one slip in `(m_i + log2(l_i)) * ln 2`
# (m_i the base-2 running max, l_i the running sum) gives, and what the slip is.
_LSE_SLIPS = (
    ((1.0, -1.0, 0.0), "log2(l_i) is subtracted from m_i where it is added"),
    ((LOG2_E, LOG2_E, -LN_2), "ln 2 is subtracted from the base-2 sum m_i + log2(l_i) where it multiplies it"),
    ((LOG2_E, LOG2_E, LN_2), "ln 2 is added to the base-2 sum m_i + log2(l_i) where it multiplies it"),
    ((LOG2_E ** 2, LOG2_E ** 2, 0.0), "the base-2 sum m_i + log2(l_i) is divided by ln 2 where it is multiplied"),
    ((1.0, LN_2, 0.0), "the natural log of l_i is taken where its base-2 log belongs (m_i and log2(l_i) are both "
                       "in base-2 units until the final factor ln 2)"),
    ((1.0, LOG2_E, 0.0), "the base-2 log of the sum is taken where its natural log belongs"),
)
_MIN_FIT_ROWS = 8  # an exact fit of three coefficients says something only over many rows


def _lse_wrong_formula(lse, ref, row_max, atol) -> Finding | None:
    """lse = a max + b ln(sum) + c, fitted over every row, exact, and not (1, 1, 0): the LSE is built from the
    right max and sum, combined wrongly. Measured: the row max of the scaled scores and ln(sum) = ref - max."""
    finite = torch.isfinite(row_max) & torch.isfinite(ref)
    m, log_sum, y = row_max[finite], (ref - row_max)[finite], lse[finite]
    if m.numel() < _MIN_FIT_ROWS or float(m.std()) < 1e-3 or float(log_sum.std()) < 1e-3:
        return None
    basis = torch.stack([m, log_sum, torch.ones_like(m)], dim=1)
    if float(torch.linalg.cond(basis)) > 1e6:
        return None  # the max and the sum move together: no telling their coefficients apart
    coef = torch.linalg.lstsq(basis, y[:, None]).solution.flatten()
    a, b, c = (float(x) for x in coef)
    fit = basis @ coef
    if not _close(y, fit, atol * 4, 1e-4) or (abs(a - 1) < 1e-3 and abs(b - 1) < 1e-3 and abs(c) < atol):
        return None
    slip = next((text for (a0, b0, c0), text in _LSE_SLIPS
                 if abs(a - a0) < 1e-3 * max(1, abs(a0)) and abs(b - b0) < 1e-3 * max(1, abs(b0))
                 and abs(c - c0) < 1e-3), "")
    terms = f"{a:.4g} * max {'-' if b < 0 else '+'} {abs(b):.4g} * ln(sum)"
    if abs(c) >= atol:
        terms += f" {'-' if c < 0 else '+'} {abs(c):.4g}"
    return Finding("lse_wrong_formula",
                   f"the log-sum-exp is {terms} in every row (max: the row max of the scaled scores; sum: the sum of "
                   "exp(score - max)), where it must be max + ln(sum), with a base-2 running max m_i "
                   "(m_i + log2(l_i)) * ln 2" + (f": {slip}" if slip else ""))


def _lse_wrong_max(lse, ref, row_max, atol) -> Finding | None:
    """lse = log(l) + c * max with c != 1: the max is added in the wrong units (base-2 m_i added as
    it is, or a max of unscaled scores). Fits c by least squares; names it when the fit is exact."""
    finite = torch.isfinite(row_max)
    m, d = row_max[finite], (lse - ref)[finite]
    if m.numel() < 2 or float(m.abs().max()) < 1e-3:
        return None
    c = float((d * m).sum() / (m * m).sum())
    resid = float((d - c * m).abs().max())
    if abs(c) < 1e-3 or not _close(d, c * m, atol * 4, 1e-4) or resid > 0.05 * float(d.abs().max()):
        return None
    units = (" (m_i is in base-2 units and was added without the factor ln 2)"
             if abs(c - (LOG2_E - 1)) < 1e-3 else "")
    return Finding("lse_wrong_max", f"the log-sum-exp adds {1 + c:.4g} times the row max instead of the max "
                                    f"itself{units}: m_i is the running max of the scaled scores, in base-2 "
                                    "units like log2(l_i)")


def lse_right_output_wrong() -> Finding:
    """For an output that is wrong while the log-sum-exp that came with it is right (measured by the caller)."""
    return Finding("output_wrong_lse_right",
                   "the log-sum-exp is right but the output is not: the max and the sum it is built from come out "
                   "right together, so the scores reach the softmax right; look at what only the output uses: the "
                   "weights' product with V (in a kernel the accumulator acc: its rescale by alpha, p @ V with p cast "
                   "to V's dtype), the final division by the sum l_i and the store of o, and at the running max m_i "
                   "itself (one that is not the row max of the scaled scores cancels in the LSE but pushes p out of "
                   "range)")


def describe_exception(exc: BaseException) -> Finding:
    """One sentence for an exception raised by student code (including Triton compile errors)."""
    text = f"{type(exc).__name__}: {exc}"
    chain: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:  # Triton nests the helper's error as the cause
        chain.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    if any("NotImplementedError" in t for t in chain):
        return Finding("not_implemented", "not implemented yet: replace `raise NotImplementedError()` "
                                          "with your code")
    if isinstance(exc, TimeoutError):
        return Finding("timeout", str(exc))
    if type(exc).__name__ == "CompilationError":
        # Triton's message is the kernel source with a caret; the reason is error_message
        # or the chained exception, and the first line says where ("at 8:38:").
        reason = getattr(exc, "error_message", None) or exc.__cause__ or "see the kernel source"
        where = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Finding("compile_error", f"the Triton kernel does not compile ({where}) {reason}"[:400])
    last = [line for line in text.strip().splitlines() if line.strip()]
    summary = last[-1] if last else type(exc).__name__
    if not summary.startswith(type(exc).__name__):
        summary = f"{type(exc).__name__}: {summary}"
    return Finding("raised", f"your code raised {summary[:300]}")


# --- gradients (backward problems) ------------------------------------------------------------------

GRAD_LABELS = {"dq": "dQ", "dk": "dK", "dv": "dV"}


def grad_scale_factor(got, ref) -> float | None:
    """c when `got` is c times `ref` as a whole (least squares, residual under 1%), else None."""
    denom = float((ref * ref).sum())
    if denom == 0 or not bool(torch.isfinite(got).all()):
        return None
    c = float((got * ref).sum()) / denom
    if float((got - c * ref).norm()) > 1e-2 * float(ref.norm()) * max(1.0, abs(c)):
        return None
    return c


def diagnose_grad(name, got, ref, q, atol, rtol) -> list[Finding]:
    """Likely causes for one wrong gradient (`name` is dq, dk or dv), from its pattern alone."""
    label = GRAD_LABELS.get(name, name)
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()
    bad = ~torch.isfinite(got)
    if bad.any():
        return [Finding("grad_nan", f"{label} has {int(bad.sum())} NaN or inf elements ({locate(bad)}): look for "
                                    "exp2 of a huge number (P rebuilt from the wrong log-sum-exp) or 0 * inf")]
    if bool((got == 0).all()) and bool((ref != 0).any()):
        return [Finding("grad_zero", f"{label} is all zeros: nothing was accumulated or stored")]
    c = grad_scale_factor(got, ref)
    if c is not None and abs(c - 1) > 1e-2:
        d = q.shape[-1]
        named = {math.sqrt(d): f" = sqrt(D): the softmax scale 1/sqrt(D) is missing from {label}",
                 1 / math.sqrt(d): f" = 1/sqrt(D): the softmax scale is applied twice in {label}",
                 LOG2_E: f" = log2(e): {label} carries qk_scale (with log2(e)) where 1/sqrt(D) belongs",
                 -1.0: f": {label} has the wrong sign"}
        why = next((text for value, text in named.items() if abs(c - value) < 1e-2 * abs(value)), "")
        return [Finding("grad_scaled", f"{label} is the right {label} times {c:.4g}{why}")]
    swapped = _swapped_slices(got, ref, atol, rtol)
    return [swapped] if swapped else []


def grad_pattern(wrong) -> Finding | None:
    """Where a backward goes wrong, from which of dQ, dK and dV are wrong (`wrong`: their names, dq/dk/dv).

    Each gradient has its own step: dV = P^T dO needs only P; dK = scale dS^T Q and dQ = scale dS K share
    dS = P * (dP - Delta). A gradient that is right vouches for what it is built from, as computed where it
    is computed."""
    wrong = set(wrong)
    if wrong == {"dq", "dk"}:
        return Finding("grad_ds_wrong", "dQ and dK are wrong while dV is right: P is right (dV = P^T dO uses only "
                                        "P), so look at what dQ and dK share beyond it: dS = P * (dP - Delta), "
                                        "with dP = dO V^T and Delta = rowsum(O * dO), and the softmax scale")
    if wrong == {"dk"}:
        return Finding("grad_dk_step", "only dK is wrong (dQ and dV are right, so P, dP, Delta and dS are right "
                                       "where dQ is computed): look at dK's own step, dK += (softmax_scale * dS)^T "
                                       "Q, and the dS the dK/dV program computes for it")
    if wrong == {"dq"}:
        return Finding("grad_dq_step", "only dQ is wrong (dK and dV are right, so P, dP, Delta and dS are right "
                                       "where dK is computed): look at dQ's own step, dQ += softmax_scale * dS K, "
                                       "and the P, dP and dS the dQ program computes for it")
    if wrong == {"dv"}:
        return Finding("grad_dv_step", "only dV is wrong (dQ and dK are right, so P is right): look at dV's own "
                                       "step, dV += P^T dO")
    if "dv" in wrong:
        return Finding("grad_p_wrong", "dV is wrong, and dV = P^T dO needs only P and dO: look at the recomputed "
                                       "P (exp of the scores minus the forward's LSE, both in the same units; "
                                       "0 for the masked keys of the diagonal tiles) and the dV update; dQ and "
                                       "dK, built from P too, follow it")
    return None
