"""Sample submissions for problem 6 (sliding window and attention sinks).

Each is the reference answer cell after one typical edit. `expected_points` follows from which
graded cells the mistake breaks: the window cell has no sinks, the two visit cells grade only
the blocks visited, the other value cells mix windows and sinks.
"""
from ..sample import Sample

SINK_CAP = "    sink_hi = tl.minimum(sink_hi, window_lo)                 # blocks from window_lo on are the window's\n"

SAMPLES = (
    Sample("correct", "the reference solution", 10),
    Sample("untouched", "the released notebook, nothing filled in", 0, untouched=True,
           expected_cause="not_implemented"),
    Sample("window_off_by_one", "k >= q - W: a window of W + 1 keys", 2,
           edits=(("in_window = (k <= q) & (k > q - window_size)", "in_window = (k <= q) & (k >= q - window_size)"),),
           expected_cause="window_off_by_one"),
    Sample("sink_visited_twice", "the sink loop is not capped at the window's start: block 0 is folded in twice", 2,
           edits=((SINK_CAP, ""),), expected_cause="sink_visited_twice"),
    Sample("visits_all_blocks", "right values from every key block: the mask hides the rest, nothing is skipped", 8,
           edits=(("    window_lo = (first_key // BLOCK_N) * BLOCK_N\n", "    window_lo = 0\n"),
                  ("    window_hi = q_end  ", "    window_hi = seq_len")),
           expected_cause="visits_all_blocks"),
    Sample("future_sinks", "sinks without causality: j < S alone lets early queries see later sinks", 4,
           edits=(("is_sink = (k < sink_size) & (k <= q)", "is_sink = k < sink_size"),),
           expected_cause="future_sinks"),
)
