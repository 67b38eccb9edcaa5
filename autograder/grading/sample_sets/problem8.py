"""Problem 8's sample submissions: the reference, the untouched release and typical mistakes of the
backward of grouped-query attention with a window and sinks.

Points out of 10: test_window 2, test_gqa 2, test_block_visits 1 (visible); hidden: masks 2,
shapes and dtypes 1, layouts 1, visits 1. Which cells a mistake costs follows from the cases each
cell holds (tests/test_problem8.py checks the sums): the group sum matters where Hq > Hkv, the
window in the recompute where a window hides keys, the sinks where a sink lies behind a window.
"""
from ..sample import Sample

# The reference lines, as they read in the solution cell.
MASK_LINE = "        seen = (j <= i) & ((j > i - window_size) | (j < sink_size))\n"
DS_LINE = "    ds = p * (dp - delta[:, None])\n"
DK_LINE = "    dk = tl.dot(tl.trans((ds * sm_scale).to(q.dtype)), q, dk)   # dK += (scale dS)^T Q\n"
DQ_LINE = "    dq = tl.dot((ds * sm_scale).to(k.dtype), k, dq)      # dQ += (scale dS) K\n"
SINK_LINE = "    sink_lo = tl.where(k_start < sink_size, after_window, seq_len)  # later queries see only the sinks\n"
WINDOW_HI_LINE = ("    window_hi = tl.minimum(k_end - 1 + window_size, seq_len)"
                  "  # the last query whose window holds the last key\n")

SAMPLES = (
    Sample("correct", "the reference solution", 10),
    Sample("untouched", "the released notebook, nothing filled in", 0, untouched=True,
           expected_cause="not_implemented"),
    Sample("group_not_summed", "dK/dV of a K/V head from the first query head of its group only", 4,
           edits=(("    end = first + group_size\n", "    end = first + 1\n"),), expected_cause="group_not_summed"),
    Sample("recompute_no_window", "the recompute's mask is causal only: keys behind the window get P > 0", 2,
           edits=((MASK_LINE, "        seen = j <= i\n"),), expected_cause="recompute_no_window"),
    Sample("recompute_no_sinks", "the recompute's mask has the window but not the sinks", 2,
           edits=((MASK_LINE, "        seen = (j <= i) & (j > i - window_size)\n"),),
           expected_cause="recompute_no_sinks"),
    Sample("sink_visited_twice", "the sink loop starts where the window loop starts", 0,
           edits=((SINK_LINE, "    sink_lo = tl.where(k_start < sink_size, window_lo, seq_len)\n"),),
           expected_cause="sink_visited_twice"),
    Sample("window_to_end", "right gradients from every later query block: the window loop is not capped", 8,
           edits=((WINDOW_HI_LINE, "    window_hi = seq_len\n"),), expected_cause="visits_outside_window"),
    Sample("no_delta", "dS = P * dP: Delta is never subtracted", 2,
           edits=((DS_LINE, "    ds = p * dp\n"),), expected_cause="delta_missing"),
    Sample("dk_no_scale", "dK without the softmax scale (dQ and dV right)", 2,
           edits=((DK_LINE, "    dk = tl.dot(tl.trans(ds.to(q.dtype)), q, dk)\n"),), expected_cause="dk_no_scale"),
    Sample("dq_no_scale", "dQ without the softmax scale (dK and dV right)", 2,
           edits=((DQ_LINE, "    dq = tl.dot(ds.to(k.dtype), k, dq)\n"),), expected_cause="dq_no_scale"),
)
