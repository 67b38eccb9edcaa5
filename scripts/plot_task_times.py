"""Plot the per-task times of Ray grading runs (the JSON files of ray_class_timing.py).

    python scripts/plot_task_times.py OUT.png [LABEL=]RUN.json [[LABEL=]RUN.json ...]

One histogram per run, with its wall time, GPUs, tasks at once and the median task.
"""
import json
import statistics
import sys
from pathlib import Path


def main(out, paths):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for arg in paths:
        label, _, path = arg.rpartition("=")
        run = json.loads(Path(path).read_text())
        run["title"] = f"{label}, {run['run']}" if label else run["run"]
        if run.get("task_seconds"):
            runs.append(run)
    fig, axes = plt.subplots(len(runs), 1, figsize=(7, 2.6 * len(runs)), squeeze=False, sharex=True)
    top = max(max(r["task_seconds"]) for r in runs)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        secs = run["task_seconds"]
        ax.hist(secs, bins=range(0, int(top) + 5, 2), color="tab:blue", alpha=0.8)
        med = statistics.median(secs)
        ax.axvline(med, color="k", linestyle="--", linewidth=1)
        ax.set_title(f"{run['title']}: {run['submissions']} submissions in {run['wall_s']:.0f} s, "
                     f"{run.get('gpus', '?'):g} GPU(s), {run.get('slots', '?')} tasks at once; median task {med:.1f} s",
                     fontsize=9)
        ax.set_ylabel("tasks")
    axes[-1, 0].set_xlabel("seconds per grading task (on its worker)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
