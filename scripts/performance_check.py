"""Performance points of every bundled sample, measured twice: does the same kernel land in the
same band both times, and where do the ratios sit against the band edges?

    python scripts/performance_check.py OUTDIR [--problems problem3 ...] [--repeats 2]

Per Triton problem: each sample whose mistake is in its code, the reference kernel against
itself, and the reference run twice per call (twice the work). Writes OUTDIR/performance.json
and OUTDIR/performance.md, and exits non-zero if a kernel changed band between repeats or a
sample did not earn the performance points it deserves.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def kernels(assignment):
    """(name, function, deserved points or None) for every kernel to time."""
    from autograder.grading.samples import SAMPLES, expected_score, sample_kernel_function
    from autograder.problems import reference_function

    reference = reference_function(assignment)

    def twice(*args, **kwargs):
        reference(*args, **kwargs)
        return reference(*args, **kwargs)
    out = [("reference itself", reference, 2), ("twice the work", twice, 0)]
    for sample in SAMPLES[assignment]:
        if sample.raw is not None or sample.missing or sample.locked_edits or sample.kernelspec or sample.filename:
            continue
        deserved = expected_score(sample, assignment) - sample.expected_points
        out.append((sample.name, sample_kernel_function(assignment, sample, REPO), deserved))
    return out


def measure(assignment, name, fn, repeats):
    from autograder.checks import CheckFailed
    from autograder.performance import band_share, time_against_reference
    from autograder.problems import get, reference_function

    module = get(assignment)
    runs = []
    for _ in range(repeats):
        buf = io.StringIO()
        start = time.monotonic()
        try:
            with contextlib.redirect_stdout(buf):
                if name in ("reference itself", "twice the work"):  # no gate: time them as they are
                    timing = time_against_reference(fn, reference_function(assignment), module.SPEC.timing)
                    points = module.SPEC.performance_points * band_share(timing.ratio)
                else:
                    points = module.performance_points(fn)
                    timing = None
            ratio = timing.ratio if timing else _ratio_from(buf.getvalue())
            runs.append({"points": points, "ratio": ratio, "seconds": time.monotonic() - start})
        except CheckFailed as exc:
            runs.append({"points": 0.0, "ratio": None, "reason": exc.message[:160],
                         "seconds": time.monotonic() - start})
    return runs


def _ratio_from(text):
    """The ratio `award` printed: on a GPU in its timing line, under the interpreter on a line of its own."""
    for line in text.splitlines():
        if "ratio" in line and "rounds" in line or line.strip().startswith("ratio "):
            return float(line.split("ratio")[1].split()[0])
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--problems", nargs="+",
                        default=["problem2b", "problem3", "problem4", "problem5", "problem6", "problem7",
                                 "problem8"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from autograder import device
    from autograder.benchmark import environment

    runtime = device.configure()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, bad = [], []
    for assignment in args.problems:
        for name, fn, deserved in kernels(assignment):
            runs = measure(assignment, name, fn, args.repeats)
            points = [r["points"] for r in runs]
            ratios = [r["ratio"] for r in runs]
            row = {"problem": assignment, "kernel": name, "deserved": deserved, "runs": runs}
            rows.append(row)
            verdict = "same band" if len(set(points)) == 1 else "BAND CHANGED"
            if len(set(points)) != 1 or points[0] != deserved:
                bad.append(f"{assignment} {name}: points {points}, deserves {deserved}")
            print(f"{assignment:<9} {name:<26} points {points} ratios "
                  f"{['-' if r is None else round(r, 3) for r in ratios]} deserves {deserved}  {verdict}", flush=True)
    env = environment()
    (out / "performance.json").write_text(json.dumps({"environment": env, "runtime": runtime.describe(),
                                                      "rows": rows}, indent=1))
    lines = [f"Environment: {env}", "",
             "| problem | kernel | points (run 1, run 2) | ratio (run 1, run 2) | deserves |", "|---|---|---|---|---|"]
    for row in rows:
        pts = ", ".join(f"{r['points']:g}" for r in row["runs"])
        rat = ", ".join("-" if r["ratio"] is None else f"{r['ratio']:.3f}" for r in row["runs"])
        lines.append(f"| {row['problem']} | {row['kernel']} | {pts} | {rat} | {row['deserved']:g} |")
    lines += ["", "Mismatches: " + ("none" if not bad else "; ".join(bad))]
    (out / "performance.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
