"""Sample submissions for problem 5 (grouped-query attention): the demo grades each one.

Points: the two schedule tests are worth 2 of 10 and do not call the attention function, so a
submission whose attention is wrong (or right for the wrong reason) but whose launch order is
right keeps exactly those 2; every attention test holds a case with Hkv > 1 and Hq > Hkv, where
each mapping mistake below shows.
"""
from ..sample import Sample

KV_HEAD_RETURN = "    off_hkv = off_hq // group\n"
KV_GROUP_LINE = "    group = n_q_heads // n_kv_heads  # query heads per K/V head\n"

GROUPED_ORDER = """    group = n_q_heads // n_kv_heads
    g = pid % group              # fastest: the query heads that share a K/V head
    rest = pid // group
    start_m = rest % n_m_blocks  # then the query block
    rest = rest // n_m_blocks
    off_hkv = rest % n_kv_heads  # then the K/V head
    off_b = rest // n_kv_heads   # slowest: the batch
    off_hq = off_hkv * group + g
"""
PLAIN_ORDER = """    start_m = pid % n_m_blocks   # problem 3's order: the query block fastest
    rest = pid // n_m_blocks
    off_hq = rest % n_q_heads
    off_b = rest // n_q_heads
"""

REPEAT_KV = '''
_kernel_on_equal_heads = flash_attention_gqa


def flash_attention_gqa(q, k, v):
    # Repeat each K/V head once per query head, then run the kernel with a group size of 1:
    # the right numbers, and G times the K/V memory.
    group = q.shape[1] // k.shape[1]
    return _kernel_on_equal_heads(q, k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1))
'''

SAMPLES = (
    Sample("correct", "the reference solution", 10),
    Sample("untouched", "the released notebook, nothing filled in", 0, untouched=True,
           expected_cause="not_implemented"),
    Sample("kv_head_modulo", "query head h reads K/V head h % Hkv instead of h // (Hq // Hkv)", 2,
           edits=((KV_HEAD_RETURN, "    off_hkv = off_hq % n_kv_heads\n"),), expected_cause="kv_head_modulo"),
    Sample("kv_head_zero", "divides by Hq instead of the group size: every query head reads K/V head 0", 2,
           edits=((KV_HEAD_RETURN, "    off_hkv = off_hq // n_q_heads\n"),), expected_cause="kv_head_zero"),
    Sample("group_off_by_one", "the group size is one too large in kv_head", 2,
           edits=((KV_GROUP_LINE, "    group = n_q_heads // n_kv_heads + 1\n"),), expected_cause="kv_group_size"),
    # Only the answer cell is graded: the notebook's own checks flag the wrapper (kv_repeated), and the
    # judge grades the kernel the answer cell makes, which is right.
    Sample("repeat_kv_before_kernel", "a later cell wraps the kernel to repeat K/V first: flagged in the "
           "notebook, not graded", 10, extra_cell=REPEAT_KV, expected_cause="kv_repeated"),
    Sample("plain_launch_order", "right heads, but problem 3's launch order (query block fastest)", 8,
           edits=((GROUPED_ORDER, PLAIN_ORDER),), expected_cause="schedule_not_grouped",
           # Right values at the reference's speed on the timed shape: its K/V (32 MiB) stay in L2.
           expected_performance=2),
)
