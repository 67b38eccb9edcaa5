"""Problem 2b's sample submissions: the reference, the untouched release, and the typical mistakes
of a first softmax kernel.

Each edit is one small change a student really makes to the solution of `solutions/problem2b`;
expected_points follow from which graded cells the mistake fails (full blocks 2, tail block 2,
hidden shapes and layouts 2, hidden masks 2, hidden large logits 2). A mistake that only the hidden
inputs show passes the self-check (the gate of the performance points) and is as fast as the
reference on the timed inputs (ordinary logits, no mask): it earns both performance points.
"""
from ..sample import Sample

PASS1_LOAD = '''        x = tl.load(x_row + offs * stride_xn, mask=mask, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m_i, tl.max(x, axis=0))
'''
PASS2 = '''    m_safe = tl.where(m_i == float("-inf"), 0.0, m_i)  # a row of -inf: 0 / 0 = NaN, as torch.softmax
    for start in range(0, n_cols, BLOCK):
        offs = start + cols                      # this block's column numbers
        mask = offs < n_cols
        x = tl.load(x_row + offs * stride_xn, mask=mask, other=float("-inf")).to(tl.float32)
        y = tl.exp(x - m_safe) / l_i
        tl.store(y_row + offs * stride_yn, y.to(Y.dtype.element_ty), mask=mask)'''  # the cell's last line

SAMPLES = (
    Sample("correct", "the reference solution", 10),
    Sample("untouched", "the released notebook, nothing filled in", 0, untouched=True,
           expected_cause="not_implemented"),
    Sample("tail_other_zero", "pass 1 loads the last block with other=0.0: missing columns count as logits of 0",
           4, edits=((PASS1_LOAD, PASS1_LOAD.replace('other=float("-inf")', "other=0.0")),),
           expected_cause="tail_other_zero"),
    Sample("unmasked_tail", "pass 1 loads every block without a mask: the last one reads past the row", 2,
           edits=((PASS1_LOAD, PASS1_LOAD.replace(', mask=mask, other=float("-inf")', "")),),
           expected_cause="unmasked_tail"),
    Sample("no_l_rescale", "the running sum is not rescaled by alpha when the max grows", 0,
           edits=(("        l_i = l_i * alpha + tl.sum(", "        l_i = l_i + tl.sum("),),
           expected_cause="no_l_rescale"),
    Sample("one_pass", "each block is written in pass 1 with the running max and sum of that moment", 0,
           edits=(("        m_i = m_new\n",
                   "        m_i = m_new\n        tl.store(y_row + offs * stride_yn, (tl.exp(x - m_safe) / l_i)"
                   ".to(Y.dtype.element_ty), mask=mask)\n"),
                  (PASS2, "")),
           expected_cause="one_pass"),
    Sample("no_max_subtraction", "exp(x) without subtracting the max (right for small logits, NaN past 88.7)", 8,
           edits=(("        m_new = tl.maximum(m_i, tl.max(x, axis=0))\n",
                   "        m_new = tl.zeros([], tl.float32)  # no max: exp(x - 0)\n"),),
           expected_cause="no_max_subtraction", expected_performance=2),
    Sample("no_safe_max", "no guard while the running max is -inf: a row whose first block is masked turns NaN", 8,
           edits=(('        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)\n', "        m_safe = m_new\n"),),
           expected_cause="nan_masked_block", expected_performance=2),
)
