"""Grade the same class of bundled submissions one after another and on Ray; time both, compare.

    python scripts/ray_class_timing.py OUTDIR [--class-size 20] [--modes sequential ray ray-shared]
                                              [--share 4] [--num-cpus N] [--num-gpus N] [--label NAME]

Modes (each grades its own copy of the same class, staged by demo.stage_demo):
  sequential  autograde.grade with OneAfterAnother, one submission after another (the path without Ray)
  ray         one Ray task per submission; on a GPU machine each task has a GPU to itself
  ray-shared  on a GPU machine, `--share` tasks share each GPU (throughput; timings inside a
              task are then disturbed by its neighbours); on a CPU machine the same as `ray`

Writes OUTDIR/<run>/course/ (grades.csv, grade_report.csv, feedback/), OUTDIR/<run>.json
(wall times, per-task seconds, scores, the run's summary) and OUTDIR/summary.txt, and exits
non-zero when a run's grades or CSV files differ from the first run's in OUTDIR (or from what the
samples deserve). A sequential run cut off by a time limit goes on with `--resume`; its wall
time is the sum of its parts, each counted up to its last graded submission. A run is named after
its mode, or `--label` (one mode only): e.g. grade the same class on 1, 2 and 4 GPUs of one
machine with `--num-gpus N --label ray-Ngpu`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def grade_mode(mode: str, out: Path, args) -> dict:
    from autograder.grading.autograde import format_run, grade
    from autograder.grading.demo import stage_demo
    from autograder.grading.export import summary, write_report
    from autograder.grading.scratch import DONE_MARKER

    name = args.label or mode
    course = out / name / "course"
    segments_path = out / f"{name}.segments.json"
    if args.resume and segments_path.exists():
        # Go on with a sequential run that an earlier process left unfinished (e.g. cut off by
        # a time limit): what it graded is kept, and its time counts up to its last graded
        # submission (the one in flight when it stopped is graded again here).
        saved = json.loads(segments_path.read_text())
        expected = {tuple(key.split("/")): points for key, points in saved["expected"].items()}
        segments = saved["segments"]
        last_done = max((p.stat().st_mtime for p in course.glob(f"autograded/*/*/{DONE_MARKER}")), default=0)
        for seg in segments:
            seg.setdefault("seconds", max(0.0, last_done - seg["start"]))
    else:
        expected = stage_demo(REPO, course, class_size=args.class_size)
        segments = []
    record = {"mode": mode, "run": name, "submissions": len(expected), "started": time.time()}
    if mode == "sequential":
        segments.append({"start": time.time()})
        segments_path.write_text(json.dumps({"expected": {"/".join(k): v for k, v in expected.items()},
                                             "segments": segments}))
        start = time.monotonic()
        run = grade(course, progress=True)
        segments[-1]["seconds"] = time.monotonic() - start
        record["wall_s"] = sum(seg["seconds"] for seg in segments)
        record["segments_s"] = [round(seg["seconds"], 1) for seg in segments]
    else:
        import ray

        from autograder.grading.ray_grading import RayGrader, start_local_ray

        start = time.monotonic()
        start_local_ray(args.num_cpus, args.num_gpus)
        record["ray_start_s"] = time.monotonic() - start
        gpus = ray.cluster_resources().get("GPU", 0)
        share = 1.0 / args.share if (mode == "ray-shared" and gpus) else None
        start = time.monotonic()
        run = grade(course, grader=RayGrader(gpus_per_task=share), progress=True)
        record["wall_s"] = time.monotonic() - start
        record["gpus_per_task"] = run.gpus_per_task
        record["slots"] = run.slots
        record["task_seconds"] = run.task_seconds
        record["gpus"] = gpus
        ray.shutdown()
    record["summary"] = format_run(run)
    rows = run.rows
    write_report(rows, course)
    record["scores"] = {f"{r.student}/{r.assignment}": r.score for r in rows}
    record["wrong"] = [f"{r.student}/{r.assignment}: {r.score} (deserves {expected[(r.student, r.assignment)]})"
                       for r in rows if r.score != expected[(r.student, r.assignment)]]
    print(summary(rows, expected))
    if record["summary"]:
        print(record["summary"])
    print(f"{name}: {len(rows)} submissions graded in {record['wall_s']:.1f} s", flush=True)
    (out / f"{name}.json").write_text(json.dumps(record, indent=1))
    return record


def compare(out: Path) -> list[str]:
    """Lines of the final table, and the differences from the first run in `out` (the
    sequential one when it ran)."""
    from autograder import device

    runtime = device.current()
    records = sorted((json.loads(p.read_text()) for p in out.glob("*.json") if not p.name.endswith(".segments.json")),
                     key=lambda r: (r["mode"] != "sequential", r.get("started", 0)))
    first = records[0]["run"] if records else ""
    lines = [f"device: {runtime.describe()}", "",
             f"{'run':<14} {'submissions':>11} {'wall s':>8} {'per sub s':>9} {'GPUs':>4} {'GPU/task':>8} "
             f"{'at once':>7}  grades / CSV vs {first}"]
    base = out / first / "course"
    problems_found = []
    for rec in records:
        mode = rec["run"]
        verdict = "-"
        if mode != first and base.exists():
            same = [(base / name).read_text() == (out / mode / "course" / name).read_text()
                    for name in ("grades.csv", "grade_report.csv")]
            verdict = "identical" if all(same) else "DIFFERENT"
            if not all(same):
                problems_found.append(f"{mode}: grades.csv {'same' if same[0] else 'differs'}, "
                                      f"grade_report.csv {'same' if same[1] else 'differs'}")
        if rec["wrong"]:
            problems_found.append(f"{mode}: unexpected grades {rec['wrong']}")
            verdict += " (unexpected grades)"
        lines.append(f"{mode:<14} {rec['submissions']:>11} {rec['wall_s']:>8.1f} "
                     f"{rec['wall_s'] / rec['submissions']:>9.1f} {rec.get('gpus', '-')!s:>4} "
                     f"{rec.get('gpus_per_task', '-')!s:>8} "
                     f"{rec.get('slots', 1)!s:>7}  {verdict}")
    return lines + [""] + problems_found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--class-size", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=["sequential", "ray", "ray-shared"],
                        choices=["sequential", "ray", "ray-shared"])
    parser.add_argument("--share", type=int, default=4, help="tasks per GPU in the ray-shared mode")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance")
    parser.add_argument("--num-gpus", type=int, default=None, help="GPUs of the local Ray instance (default: all)")
    parser.add_argument("--resume", action="store_true",
                        help="sequential mode: go on with the unfinished run in OUTDIR instead of starting afresh")
    parser.add_argument("--label", default=None, help="name of this run (one mode only); default: the mode")
    args = parser.parse_args()
    if args.label and len(args.modes) != 1:
        parser.error("--label names one run: give exactly one mode")

    from autograder import device

    device.configure()  # before anything defines a kernel; the graded notebooks inherit it
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for mode in args.modes:
        grade_mode(mode, out, args)
    lines = compare(out)
    text = "\n".join(lines)
    print("\n" + text)
    (out / "summary.txt").write_text(text + "\n")
    return 1 if lines[-1] else 0


if __name__ == "__main__":
    sys.exit(main())
