"""Problem 2's sample submissions: the reference, the untouched release, and the typical mistakes.

Each edit is one small change a student really makes to the solution of `solutions/problem2`;
expected_points follow from which graded cells the mistake fails (softmax 2 + 2 hidden,
attention 2, no score matrix 1, hidden shapes 1, hidden large logits 2). A materialised score
matrix is caught in every attention cell that has a case large enough to tell it from a block.
"""
from ..sample import Sample

# The attention body written the obvious way: every score of a head at once.
_TILED_BODY = '''    scale = 1.0 / math.sqrt(q.shape[-1])
    seq_len_k = k.shape[2]
    qf = q.float()  # the running state is float32 whatever the input dtype
'''
_MATERIALISED_BODY = '''    scale = 1.0 / math.sqrt(q.shape[-1])
    s = (q.float() @ k.float().transpose(-1, -2)) * scale  # (B, H, Lq, Lk): the whole matrix
    m = s.amax(dim=-1)
    p = torch.exp(s - m[..., None])
    l = p.sum(dim=-1)
    acc = p @ v.float()
    o = acc / l[..., None]
    lse = m + torch.log(l)
    return o.to(q.dtype), lse
'''

SAMPLES = (
    Sample("correct", "the reference solution", 10),
    Sample("untouched", "the released notebook, nothing filled in", 0, untouched=True,
           expected_cause="not_implemented"),
    Sample("softmax_no_l_rescale", "online_softmax: the running sum is not rescaled when the max grows", 6,
           edits=(("        l = l * alpha + torch.exp(block - m_safe[:, None]).sum(dim=1)\n",
                   "        l = l + torch.exp(block - m_safe[:, None]).sum(dim=1)\n"),),
           expected_cause="no_l_rescale"),
    Sample("softmax_no_max_subtraction", "online_softmax: exp(x) without subtracting the max "
           "(right for small logits, NaN at 1e4)", 8,
           edits=(("        m_new = torch.maximum(m, block.amax(dim=1))\n",
                   "        m_new = torch.zeros_like(m)  # no max: exp(x - 0)\n"),),
           expected_cause="no_max_subtraction"),
    Sample("attention_no_acc_rescale", "tiled_attention: acc is not rescaled by alpha", 4,
           edits=(("        acc = acc * alpha[..., None] + p @ v_block\n",
                   "        acc = acc + p @ v_block\n"),),
           expected_cause="no_acc_rescale"),
    Sample("attention_dropped_tail", "tiled_attention: the loop stops before the partial last block", 4,
           edits=(("    for start in range(0, seq_len_k, block_n):\n",
                   "    for start in range(0, seq_len_k - block_n + 1, block_n):\n"),),
           expected_cause="dropped_tail"),
    Sample("attention_materialised", "tiled_attention: builds the whole score matrix (right values, "
           "quadratic memory)", 4,
           edits=((_TILED_BODY, _MATERIALISED_BODY),),
           expected_cause="materialised_scores"),
)
