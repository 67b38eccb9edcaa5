"""Problem 7's sample submissions: the reference, the untouched release and typical backward mistakes.

Points out of 10: test_noncausal 2, test_causal 2 (visible); hidden: lengths 2 (causal and not),
shapes and dtypes 2, layouts 2 (both with causal cases).
"""
from ..sample import Sample

# The reference lines, as they read in the solution cell. Its dkdv_update computes P and dS transposed
# (keys by queries) instead of calling recompute_p and score_grad: a mistake in those helpers, which
# would reach both kernels through them, is made in dkdv_update's lines too.
P_LINE = "    p = tl.math.exp2(qk * qk_scale - lse[:, None] * LOG2_E)\n"
P_T_LINE = "    p_t = tl.math.exp2(qk_t * qk_scale - lse[None, :] * LOG2_E)\n"
MASK_LINES = "    if ON_DIAGONAL:\n        p = tl.where(key_idx[None, :] <= query_idx[:, None], p, 0.0)\n"
MASK_T_LINES = "    if ON_DIAGONAL:\n        p_t = tl.where(key_idx[:, None] <= query_idx[None, :], p_t, 0.0)\n"
DS_LINE = "    ds = p * (dp - delta[:, None])\n"
DS_T_LINE = "    ds_t = p_t * (dp_t - delta[None, :])\n"
DK_LINE = "    dk = tl.dot((ds_t * sm_scale).to(q.dtype), q, dk)            # dK += (scale dS)^T Q\n"
DQ_LINE = "    dq = tl.dot((ds * sm_scale).to(k.dtype), k, dq)      # dQ += (scale dS) K\n"

SAMPLES = (
    Sample("correct", "the reference solution", 10),
    Sample("untouched", "the released notebook, nothing filled in", 0, untouched=True,
           expected_cause="not_implemented"),
    Sample("no_recompute_mask", "P is rebuilt without the causal mask on the diagonal tiles", 2,
           edits=((MASK_LINES, ""), (MASK_T_LINES, "")), expected_cause="no_recompute_mask"),
    Sample("no_delta", "dS = P * dP: Delta is never subtracted", 0,
           edits=((DS_LINE, "    ds = p * dp\n"), (DS_T_LINE, "    ds_t = p_t * dp_t\n")),
           expected_cause="delta_missing"),
    Sample("lse_natural_in_exp2", "exp2 of base-2 scores minus the natural-log LSE", 0,
           edits=((P_LINE, "    p = tl.math.exp2(qk * qk_scale - lse[:, None])\n"),
                  (P_T_LINE, "    p_t = tl.math.exp2(qk_t * qk_scale - lse[None, :])\n")), expected_cause="lse_base"),
    Sample("dk_no_scale", "dK without the softmax scale (dQ and dV right)", 0,
           edits=((DK_LINE, "    dk = tl.dot(ds_t.to(q.dtype), q, dk)\n"),), expected_cause="dk_no_scale"),
    Sample("dq_no_scale", "dQ without the softmax scale (dK and dV right)", 0,
           edits=((DQ_LINE, "    dq = tl.dot(ds.to(k.dtype), k, dq)\n"),), expected_cause="dq_no_scale"),
    Sample("delta_in_block", "Delta recomputed from the current key block instead of the preprocess's", 0,
           edits=((DS_LINE, "    ds = p * (dp - tl.sum(p * dp, axis=1)[:, None])\n"),
                  (DS_T_LINE, "    ds_t = p_t * (dp_t - tl.sum(p_t * dp_t, axis=0)[None, :])\n")),
           expected_cause="delta_one_block"),
)
