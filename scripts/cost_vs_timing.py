"""Performance points two ways: counted under the interpreter, and timed on the GPU.

    python scripts/cost_vs_timing.py OUTDIR [--problems problem3 ...]

Per Triton problem, for the reference kernel against itself, the reference run twice per call,
every bundled sample whose mistake is in its code and the samples that are right but ask more of
a GPU (sample_sets' PERFORMANCE): the counted-cost ratio and points (what a grade without a GPU
gives; a child process with TRITON_INTERPRET=1 computes them) and, where there is a GPU, the
timed ratio and points (what a grade on this GPU gives). A kernel that fails the problem's
self-check earns no points either way and is listed with its reason. Prints a table and writes
OUTDIR/cost_vs_timing.json and OUTDIR/cost_vs_timing.md. Exits 1 when, on a GPU, the two ways
give a kernel different points.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PROBLEMS = ["problem3", "problem4", "problem5", "problem6"]


def kernels(assignment):
    """(name, function, deserved performance points) for every kernel to grade."""
    from autograder.grading.samples import PERFORMANCE, SAMPLES, expected_score, sample_kernel_function
    from autograder.problems import reference_function

    reference = reference_function(assignment)

    def twice(*args, **kwargs):
        reference(*args, **kwargs)
        return reference(*args, **kwargs)
    out = [("reference itself", reference, 2.0), ("twice the work", twice, 0.0)]
    for sample in SAMPLES[assignment] + PERFORMANCE[assignment]:
        if sample.raw is not None or sample.missing or sample.locked_edits or sample.kernelspec or sample.filename:
            continue
        deserved = expected_score(sample, assignment) - sample.expected_points
        rejected = answer_rejected(assignment, sample)
        # The judge grades the answer cell in the released module: a cell the student added is not in it.
        graded = replace(sample, extra_cell="")
        out.append((sample.name, rejected or sample_kernel_function(assignment, graded, REPO), deserved))
    return out


def answer_rejected(assignment, sample) -> str:
    """Why the grader refuses this sample's answer cell before running it ("" when it does not)."""
    from autograder.grading.verify import answer_cell_violations
    from autograder.kernel_module import apply_edits
    from autograder.notebook_code import cell_by_id, read, strip_markers
    from autograder.problems import get_spec

    if sample.untouched:
        return ""
    spec = get_spec(assignment)
    source = read(REPO / "solutions" / assignment / spec.notebook)
    solution = strip_markers(cell_by_id(source, spec.student_cell).source)
    found = answer_cell_violations(apply_edits(solution, sample.edits) + sample.answer_suffix, spec.answer_policy)
    return f"answer cell rejected: {found[0]}" if found else ""


def grade(assignment, name, fn):
    """{"points", "ratio", "seconds"} (or "reason" when it earns nothing before any measurement),
    measured the way `award` measures here: counted under the interpreter, timed on a GPU."""
    from autograder.checks import CheckFailed
    from autograder.performance import band_share, measure_against_reference
    from autograder.problems import get, reference_function

    module = get(assignment)
    start = time.monotonic()
    if isinstance(fn, str):
        return {"points": 0.0, "ratio": None, "reason": fn, "seconds": 0.0}
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if name not in ("reference itself", "twice the work"):  # those two have no gate
                module.check(fn)
            measured = measure_against_reference(fn, reference_function(assignment), module.SPEC.timing)
        points = module.SPEC.performance_points * band_share(measured.ratio)
        return {"points": points, "ratio": measured.ratio, "seconds": time.monotonic() - start,
                "detail": measured.lines()}
    except CheckFailed as exc:
        return {"points": 0.0, "ratio": None, "reason": exc.message[:200], "seconds": time.monotonic() - start}


def run_here(problems) -> list[dict]:
    rows = []
    for assignment in problems:
        for name, fn, deserved in kernels(assignment):
            result = grade(assignment, name, fn)
            rows.append({"problem": assignment, "kernel": name, "deserved": deserved, **result})
            print(f"  {assignment} {name}: {result['points']:g} points", file=sys.stderr, flush=True)
    return rows


def counted_in_child(problems, out: Path) -> list[dict]:
    """The counted grades, from a process where every kernel runs in the interpreter."""
    target = out / "counted.json"
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    subprocess.run([sys.executable, __file__, str(out), "--problems", *problems, "--count-only"],
                   env=env, check=True, cwd=REPO)
    return json.loads(target.read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--problems", nargs="+", default=PROBLEMS)
    parser.add_argument("--counted", type=Path, help="counted.json from an earlier run (say, on a machine "
                        "without a GPU: triton 3.6's interpreter fails with numpy >= 2.4) instead of counting here")
    parser.add_argument("--count-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from autograder import device

    if args.count_only:
        device.configure(verbose=False)
        (out / "counted.json").write_text(json.dumps(run_here(args.problems), indent=1))
        return 0

    import torch

    gpu = torch.cuda.is_available()
    if args.counted:
        counted = [r for r in json.loads(args.counted.read_text()) if r["problem"] in args.problems]
    else:
        print("counting under the interpreter ...", file=sys.stderr, flush=True)
        counted = counted_in_child(args.problems, out)
    timed: list[dict] = []
    if gpu:
        runtime = device.configure(verbose=False)
        if runtime.interpreter:
            gpu = False
        else:
            print(f"timing on {torch.cuda.get_device_name(0)} ...", file=sys.stderr, flush=True)
            timed = run_here(args.problems)
    from autograder.benchmark import environment

    def key(r):
        return r["problem"], r["kernel"]
    counted_by, timed_by = {key(r): r for r in counted}, {key(r): r for r in timed}
    fields = ("points", "ratio", "reason", "detail")
    rows, disagree = [], []
    for k in dict.fromkeys([*counted_by, *timed_by]):
        c, t = counted_by.get(k), timed_by.get(k)
        rows.append({"problem": k[0], "kernel": k[1], "deserved": (c or t)["deserved"],
                     "counted": None if c is None else {f: c.get(f) for f in fields},
                     "timed": None if t is None else {f: t.get(f) for f in fields}})
        if c is not None and t is not None and c["points"] != t["points"]:
            disagree.append(f"{k[0]} {k[1]}: counted {c['points']:g}, timed {t['points']:g}")

    def cell(r):
        if r is None:
            return "-", "-"
        ratio = ("rejected" if "rejected" in (r.get("reason") or "") else "fails check") if r["ratio"] is None \
            else f"{r['ratio']:.2f}"
        return ratio, f"{r['points']:g}"
    where = torch.cuda.get_device_name(0) if gpu else "no GPU"
    lines = [f"Counted (interpreter, priced on an H200) against timed ({where}).", "",
             "| problem | kernel | deserves | counted ratio | counted points | timed ratio | timed points |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cr, cp = cell(r["counted"])
        tr, tp = cell(r["timed"])
        lines.append(f"| {r['problem']} | {r['kernel']} | {r['deserved']:g} | {cr} | {cp} | {tr} | {tp} |")
    lines += ["", "Counted and timed points differ: " + ("; ".join(disagree) if disagree else
                                                         "nowhere" if gpu else "not compared (no GPU)")]
    (out / "cost_vs_timing.json").write_text(json.dumps({"environment": environment(), "gpu": where,
                                                         "rows": rows, "disagree": disagree}, indent=1))
    (out / "cost_vs_timing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
