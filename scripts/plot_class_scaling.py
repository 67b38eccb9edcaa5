"""Table and plot of a class graded on 1, 2, ... GPUs (the output folder of multi_gpu_class.sh).

    python scripts/plot_class_scaling.py OUTDIR

For every OUTDIR/class-N/ folder and every run in it (LABEL.json from ray_class_timing.py,
LABEL.dmon from `nvidia-smi dmon -s u -o T`, LABEL.start and LABEL.done: when the run started and
when each submission was recorded) it prints a markdown table (wall time, speed-up over the
one-GPU run and over the sequential path, per-task times, mean SM utilisation per GPU, grades
against the first run's) into OUTDIR/scaling.md, and draws OUTDIR/scaling.png: submissions done
over time, GPU utilisation over time, and per-task times. A sequential run stopped by its time
limit has no JSON: its rate (submissions recorded per second after the first) stands in for its
wall time, marked "extrapolated".
"""
from __future__ import annotations

import json
import statistics
import sys
from datetime import datetime, timedelta
from pathlib import Path


def read_dmon(path: Path, start: float | None) -> dict[int, list[tuple[float, float]]]:
    """{gpu: [(seconds since start, SM %)]}; dmon stamps local wall-clock times (HH:MM:SS)."""
    series: dict[int, list[tuple[float, float]]] = {}
    if not path.exists():
        return series
    day = datetime.fromtimestamp(start) if start else None
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#") or len(fields) < 3:
            continue
        try:
            gpu, sm = int(fields[1]), float(fields[2]) if fields[2] != "-" else 0.0
            clock = datetime.strptime(fields[0], "%H:%M:%S").time()
        except ValueError:
            continue
        t = datetime.combine(day.date(), clock) if day else None
        if t is not None and day is not None and t < day - timedelta(hours=12):
            t += timedelta(days=1)
        secs = (t.timestamp() - start) if (t is not None and start) else float(len(series.get(gpu, ())))
        series.setdefault(gpu, []).append((secs, sm))
    return series


def read_run(folder: Path, label: str) -> dict:
    record = json.loads((folder / f"{label}.json").read_text()) if (folder / f"{label}.json").exists() else {}
    start_file = folder / f"{label}.start"
    start = float(start_file.read_text()) if start_file.exists() else None
    done = []
    if (folder / f"{label}.done").exists():
        done = sorted(float(line.split()[0]) for line in (folder / f"{label}.done").read_text().splitlines() if line)
    return {"label": label, "record": record, "start": start,
            "done": [t - start for t in done] if start else [], "dmon": read_dmon(folder / f"{label}.dmon", start)}


def wall_time(run: dict) -> tuple[float | None, int, bool]:
    """(wall seconds, submissions, extrapolated?) of a run; a cut-off run is extrapolated from its rate."""
    rec = run["record"]
    if rec:
        return rec["wall_s"], rec["submissions"], False
    done = run["done"]
    if len(done) < 2:
        return None, len(done), True
    return (done[-1] - done[0]) / (len(done) - 1), len(done), True


def table(folder: Path, runs: list[dict]) -> list[str]:
    one_gpu = next((r for r in runs if r["record"].get("gpus") == 1), None)
    seq = next((r for r in runs if r["label"].startswith("sequential")), None)
    first = next((r for r in runs if r["record"]), None)
    lines = [f"### {folder.name}", "",
             "| run | GPUs | tasks at once | submissions | wall time | per submission | vs 1 GPU | vs sequential "
             "| task median / p90 / max | mean SM use per GPU | grades vs " + (first["label"] if first else "-") + " |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    base_scores = first["record"].get("scores", {}) if first else {}
    for run in runs:
        rec = run["record"]
        wall, n, extrapolated = wall_time(run)
        per_sub = (wall if extrapolated else wall / n) if wall is not None and n else None
        wall_text = "-" if wall is None else (f"{per_sub * (first['record']['submissions'] if first else n):.0f} s "
                                              f"(extrapolated from {n})" if extrapolated else f"{wall:.0f} s")
        speed = []
        for ref in (one_gpu, seq):
            if ref is None or ref is run or per_sub is None:
                speed.append("-")
                continue
            rwall, rn, rextra = wall_time(ref)
            rper = rwall if rextra else (rwall / rn if rwall else None)
            speed.append(f"{rper / per_sub:.2f}x" if rper else "-")
        tasks = rec.get("task_seconds") or []
        task_text = (f"{statistics.median(tasks):.0f} / {sorted(tasks)[int(0.9 * (len(tasks) - 1))]:.0f} / "
                     f"{max(tasks):.0f} s" if tasks else "-")
        busy = [f"GPU{g}: {statistics.mean(v for _, v in s):.0f}%" for g, s in sorted(run["dmon"].items())
                if s and (rec.get("gpus") is None or g < max(1, int(rec.get("gpus", 1))))]
        scores = rec.get("scores", {})
        same = [k for k in scores if k in base_scores]
        grades = ("-" if not scores or run is first else
                  "identical" if all(scores[k] == base_scores[k] for k in same) and same else "DIFFERENT")
        if scores and run is not first and len(same) < len(scores):
            grades += f" ({len(same)} in common)"
        lines.append(f"| {run['label']} | {rec.get('gpus', '-') if rec else 1} | {rec.get('slots', 1) if rec else 1} "
                     f"| {n} | {wall_text} | {per_sub:.1f} s | {speed[0]} | {speed[1]} | {task_text} | "
                     f"{', '.join(busy) or '-'} | {grades} |" if per_sub is not None else
                     f"| {run['label']} | - | - | {n} | - | - | - | - | - | - | - |")
    return lines + [""]


def plot(out: Path, folders: dict[Path, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(folders), 3, figsize=(16, 4 * len(folders)), squeeze=False)
    for row, (folder, runs) in zip(axes, folders.items(), strict=True):
        done_ax, gpu_ax, task_ax = row
        for run in runs:
            if run["done"]:
                done_ax.step(run["done"], range(1, len(run["done"]) + 1), where="post", label=run["label"])
            for gpu, series in sorted(run["dmon"].items()):
                if series and (not run["record"] or gpu < max(1, int(run["record"].get("gpus", 1)))):
                    gpu_ax.plot([t for t, _ in series], [v for _, v in series], lw=0.8,
                                label=f"{run['label']} GPU{gpu}")
        tasked = [r for r in runs if r["record"].get("task_seconds")]
        if tasked:
            task_ax.boxplot([r["record"]["task_seconds"] for r in tasked], orientation="horizontal")
            task_ax.set_yticks(range(1, len(tasked) + 1), [r["label"] for r in tasked])
        done_ax.set(title=f"{folder.name}: submissions recorded", xlabel="seconds since the run started",
                    ylabel="submissions")
        gpu_ax.set(title="GPU SM utilisation (nvidia-smi dmon)", xlabel="seconds since the run started",
                   ylabel="%", ylim=(0, 105))
        task_ax.set(title="time of one grading task", xlabel="seconds")
        for ax in (done_ax, gpu_ax):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(outdir: str) -> int:
    root = Path(outdir)
    folders = {}
    for folder in sorted(root.glob("class-*"), key=lambda p: int(p.name.split("-")[1])):
        labels = sorted({p.stem for p in folder.iterdir() if p.suffix in (".json", ".start")
                         and not p.name.endswith(".segments.json")},
                        key=lambda lab: (not lab.startswith("sequential"), lab))
        folders[folder] = [read_run(folder, label) for label in labels]
    if not folders:
        sys.exit(f"no class-N folders in {root}")
    lines = [line for folder, runs in folders.items() for line in table(folder, runs)]
    text = "\n".join(lines)
    print(text)
    (root / "scaling.md").write_text(text + "\n")
    plot(root / "scaling.png", folders)
    print(f"wrote {root / 'scaling.md'} and {root / 'scaling.png'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
