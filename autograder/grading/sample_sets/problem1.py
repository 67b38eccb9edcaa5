"""Problem 1's sample submissions: the reference, the untouched release, and typical mistakes.

Each edit is an (old, new) replacement in the solution's answer cell; expected_points follow
from which graded cells the mistake fails (see solutions/problem1/problem1.ipynb):
test_create_mask 1, test_full_attention 2, test_causal 1, test_score_bytes 1 (visible);
test_hidden_masks 2, test_hidden_gqa 1, test_hidden_shapes 1, test_hidden_create_mask 1.
"""
from ..sample import Sample

SDPA_CHEAT = '''
import torch.nn.functional as F


def naive_attention(q, k, v, is_causal=False, window_size=None, sink_size=None):
    # Let PyTorch do it: correct, but not the exercise.
    mask = None
    if is_causal:
        n = q.shape[2]
        mask = create_mask_bool(n, n if window_size is None else window_size, sink_size or 0, device=q.device)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return o, torch.logsumexp(s, dim=-1)
'''

SAMPLES = (
    Sample("correct", "the reference solution", 10),
    Sample("untouched", "the released notebook, nothing filled in", 0, untouched=True,
           expected_cause="not_implemented"),
    # Window W + 1: fails every check with a window shorter than L (not the plain causal one, W = L).
    # Lost: test_create_mask 1, test_causal 1, test_hidden_masks 2, test_hidden_gqa 1,
    # test_hidden_create_mask 1.
    Sample("window_off_by_one", "the window test is j >= i - W: one key too many", 4,
           edits=(("in_window = col >= row - (window_size - 1)", "in_window = col >= row - window_size"),),
           expected_cause="window_off_by_one"),
    # `&` binds tighter than `|`: sinks become visible to the queries before them.
    # Lost: the same cells as above (each has a case with S >= 2).
    Sample("sink_not_causal", "(j <= i) & in_window | is_sink: sinks leak to earlier queries", 4,
           edits=(("return (col <= row) & (in_window | is_sink)", "return (col <= row) & in_window | is_sink"),),
           expected_cause="sink_not_causal"),
    # k.repeat tiles the heads (0, 1, 0, 1): query head h reads K/V head h % Hkv.
    # Lost: test_full_attention 2, test_hidden_gqa 1.
    Sample("gqa_modulo", "K/V heads tiled with repeat instead of repeat_interleave (h % Hkv)", 7,
           edits=(("k = k.repeat_interleave(groups, dim=1)", "k = k.repeat(1, groups, 1, 1)"),
                  ("v = v.repeat_interleave(groups, dim=1)", "v = v.repeat(1, groups, 1, 1)")),
           expected_cause="gqa_modulo"),
    # The answer cell itself replaces naive_attention with SDPA: its import is outside the answer
    # policy, so the judge grades nothing of it.
    Sample("sdpa_instead_of_own", "the answer cell redefines naive_attention with scaled_dot_product_attention", 0,
           answer_suffix=SDPA_CHEAT, expected_note="answer cell rejected"),
)
