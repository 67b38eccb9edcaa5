"""Teaching pictures for the notebooks (drawn fresh each run; notebooks store no images)."""
from __future__ import annotations

import math

import torch

from .feedback_run import FIGURE


@FIGURE
def plot_tiling(seq_len=200, block_m=64, block_n=64, query_block=1, ax=None):
    """The (L x L) score matrix cut into tiles: what one program visits and where the tail is.

    One program owns a row of tiles (BLOCK_M queries) and walks along it one BLOCK_N-wide
    block of keys at a time. The last block sticks out past L when L % BLOCK_N != 0: those
    keys do not exist and must be masked.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n_m, n_n = math.ceil(seq_len / block_m), math.ceil(seq_len / block_n)
    width, height = n_n * block_n, n_m * block_m
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 6))
    for i in range(n_m):
        for j in range(n_n):
            mine = i == query_block
            ax.add_patch(Rectangle((j * block_n, i * block_m), block_n, block_m,
                                   facecolor="#9ecae1" if mine else "#f0f0f0", edgecolor="#555", lw=0.8))
            if mine:
                ax.text(j * block_n + block_n / 2, i * block_m + block_m / 2, f"step {j}",
                        ha="center", va="center", fontsize=9)
    ax.add_patch(Rectangle((seq_len, 0), width - seq_len, height, facecolor="none", hatch="///",
                           edgecolor="#d62728", lw=0, label="keys past L: mask to -inf"))
    ax.add_patch(Rectangle((0, seq_len), width, height - seq_len, facecolor="none", hatch="\\\\",
                           edgecolor="#999", lw=0, label="queries past L: not stored"))
    ax.axvline(seq_len, color="#d62728", lw=2)
    ax.axhline(seq_len, color="#999", lw=1.5)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xlabel(f"key index j (blocks of BLOCK_N={block_n})")
    ax.set_ylabel(f"query index i (blocks of BLOCK_M={block_m})")
    ax.set_title(f"L={seq_len}: program {query_block} walks its row of tiles left to right")
    ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    return ax


@FIGURE
def plot_online_softmax(seq_len=256, block_n=64, seed=0, ax=None):
    """Running max m and running sum l of one row of scores, block by block, against the exact values.

    The running sum jumps down whenever the max grows: that is the rescaling by alpha.
    """
    import matplotlib.pyplot as plt

    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(seq_len, generator=gen, dtype=torch.float64) * 2
    s[seq_len // 2 + 3] = s.max() + 3  # a late, larger score forces a visible rescale
    ms, ls, ends = [], [], []
    m, l = -math.inf, 0.0
    for start in range(0, seq_len, block_n):
        blk = s[start:start + block_n]
        m_new = max(m, float(blk.max()))
        l = l * math.exp(m - m_new) + float(torch.exp(blk - m_new).sum())
        m = m_new
        ms.append(m)
        ls.append(l)
        ends.append(min(start + block_n, seq_len))
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    ax.step(ends, ms, where="post", marker="o", label="running max m")
    ax.axhline(float(s.max()), ls="--", color="C0", alpha=0.5, label="true max")
    ax2 = ax.twinx()
    ax2.plot(ends, ls, "s-", color="C1", label="running sum l (relative to current m)")
    ax2.axhline(float(torch.exp(s - s.max()).sum()), ls="--", color="C1", alpha=0.5, label="true sum")
    ax.set_xlabel("keys seen so far")
    ax.set_ylabel("m")
    ax2.set_ylabel("l")
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [h.get_label() for h in lines], fontsize=8, loc="upper left")
    ax.set_title("Online softmax: one pass, block by block")
    return ax


@FIGURE
def plot_mask(seq_len=64, window=None, sink=0, causal=True, block_m=16, block_n=16, ax=None, title=None):
    """The attention mask of a problem, drawn from the grader's own `create_mask_bool`, with
    the block grid on top: blue cells are visible keys, hatched tiles are the key blocks a kernel
    must visit (`block_visits.key_blocks`); every other tile can be skipped."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .block_visits import key_blocks
    from .references import create_mask_bool

    if causal:
        mask = create_mask_bool(seq_len, window_size=seq_len if window is None else window, sink_size=sink or 0)
    else:
        mask = torch.ones(seq_len, seq_len, dtype=torch.bool)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.imshow(mask.numpy(), cmap="Blues", vmin=-0.3, vmax=1.3, interpolation="nearest",
              extent=(0, seq_len, seq_len, 0))
    visits = 0
    for start in range(0, seq_len, block_m):
        for j in key_blocks(start, start + block_m, seq_len, block_n, causal, window, sink):
            visits += 1
            ax.add_patch(Rectangle((j * block_n, start), min(block_n, seq_len - j * block_n),
                                   min(block_m, seq_len - start), fill=False, hatch="//", edgecolor="#e6550d",
                                   lw=1.2))
    for x in range(0, seq_len + 1, block_n):
        ax.axvline(x, color="#888", lw=0.5)
    for y in range(0, seq_len + 1, block_m):
        ax.axhline(y, color="#888", lw=0.5)
    total = math.ceil(seq_len / block_m) * math.ceil(seq_len / block_n)
    if title is None:
        kind = "full" if not causal else ("causal" if window is None and not sink else
                                           f"window {window if window is not None else 'L'}, sinks {sink}")
        title = f"{kind} mask, L={seq_len}: {visits} of {total} tiles visited"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
    return ax
