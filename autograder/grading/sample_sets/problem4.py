"""Problem 4's sample submissions: the reference, the untouched release and typical causal mistakes.

Points out of 10: values 2 + 1 (visible) + 2 + 2 + 1 (hidden), block skipping 1 (visible) + 1 (hidden).
"""
from ..sample import Sample

# The reference ranges, as they read in the solution cell.
HI1 = "    hi1 = start_m * BLOCK_M\n"
LO2 = "    lo2 = start_m * BLOCK_M\n"
HI2 = "    hi2 = tl.minimum((start_m + 1) * BLOCK_M, seq_len)\n"
MASK = "        s = tl.where(key_idx[None, :] <= query_idx[:, None], s, float(\"-inf\"))\n"
MASK_BLOCK = '''    if ON_DIAGONAL:
        # Query i may look at key j only if j <= i. For every row that is stored (i < seq_len)
        # this also hides the keys past the end of the sequence.
''' + MASK

SAMPLES = (
    Sample("correct", "the reference solution", 10),
    Sample("untouched", "the released notebook, nothing filled in", 0, untouched=True,
           expected_cause="not_implemented"),
    Sample("skip_nothing", "masks every key block and skips none: right values, twice the work", 8,
           edits=((HI1, "    hi1 = 0\n"), (LO2, "    lo2 = 0\n"), (HI2, "    hi2 = seq_len\n")),
           expected_cause="blocks_not_skipped"),
    Sample("diagonal_offset", "the mask keeps j < i: a query no longer sees itself (row 0 sees nothing)", 2,
           edits=((MASK, MASK.replace("<=", "<")),), expected_cause="diagonal_offset"),
    Sample("no_causal_mask", "the diagonal blocks are not masked", 2,
           edits=((MASK_BLOCK, ""),), expected_cause="no_causal_mask"),
    Sample("diagonal_twice", "stage 1 runs to the end of the query block: the diagonal is visited twice", 0,
           edits=((HI1, "    hi1 = (start_m + 1) * BLOCK_M\n"),), expected_cause="diagonal_twice"),
)
