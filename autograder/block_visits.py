"""Which blocks of keys a masked FlashAttention kernel has to visit, and how many.

A causal, windowed or sink-masked kernel is only fast if it skips the key blocks that the
mask hides completely. These functions give the minimal set from the seed's mask rules
(`references.create_mask_bool`), so a test can compare it with what a kernel reports.
"""
from __future__ import annotations


def visible_key_ranges(q_start: int, q_end: int, seq_len: int, causal: bool = True,
                       window: int | None = None, sink: int = 0) -> list[tuple[int, int]]:
    """Half-open key ranges [lo, hi) that some query in [q_start, q_end) may attend to.

    Non-causal: every key. Causal with window W (W = None: no window) and S sinks:
    query i sees keys i-(W-1) .. i and keys j < S with j <= i.
    """
    q_end = min(q_end, seq_len)
    if q_start >= q_end:
        return []
    if not causal:
        return [(0, seq_len)]
    last = q_end - 1                       # the furthest key any of these queries sees
    first = 0 if window is None else max(0, q_start - (window - 1))
    ranges = [(first, last + 1)]
    sink_end = min(sink or 0, last + 1)
    if sink_end > 0 and sink_end < first:  # sinks that the window does not already cover
        ranges.insert(0, (0, sink_end))
    elif sink_end > 0:
        ranges = [(0, last + 1)]
    return ranges


def key_blocks(q_start: int, q_end: int, seq_len: int, block_n: int, causal: bool = True,
               window: int | None = None, sink: int = 0) -> list[int]:
    """Indices of the key blocks of size `block_n` that hold at least one visible key."""
    blocks: list[int] = []
    for lo, hi in visible_key_ranges(q_start, q_end, seq_len, causal, window, sink):
        blocks.extend(range(lo // block_n, (hi - 1) // block_n + 1))
    return sorted(set(blocks))


def minimal_visits(seq_len: int, block_m: int, block_n: int, causal: bool = True,
                   window: int | None = None, sink: int = 0) -> list[int]:
    """For each query block, how many key blocks a kernel that skips every hidden block visits."""
    return [len(key_blocks(start, start + block_m, seq_len, block_n, causal, window, sink))
            for start in range(0, seq_len, block_m)]
