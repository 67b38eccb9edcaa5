"""What the sandbox costs: grade the same class twice, in the sandbox and without it, and compare.

    python scripts/sandbox_overhead.py OUTDIR [--assignment problem3] [--samples a b c]

Each run stages a fresh course with the bundled samples of the assignment, grades it one
submission after another (as `autograde.OneAfterAnother` does), and records each submission's wall time (from the
tqdm-free loop below), its score and notes. Writes OUTDIR/sandbox-overhead.json and prints a
table: per-submission seconds with and without the sandbox, and whether the grades agree.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autograder import device  # noqa: E402


def grade_once(course: Path, assignment: str, samples, sandboxed: bool, log: Path) -> dict:
    from autograder.grading import autograde, demo, export, scratch
    from autograder.grading import course as course_folder
    from autograder.notebook_code import read

    expected = demo.stage_demo(REPO, course, assignments=(assignment,), only=set(samples))
    release_nb = read(course_folder.release_path(course, assignment))
    common, template = scratch.course_template(course, [assignment])
    per = {}
    for student in course_folder.submitted_students(course, assignment):
        notes, problem, needs = autograde.triage(course, assignment, student, release_nb)
        start = time.monotonic()
        result = scratch.grade_in_scratch(common, template[assignment], scratch.handed_in(course, assignment, student),
                                          assignment, student, sandboxed=sandboxed)
        scratch.record_result(course, result)
        per[student] = {"seconds": round(time.monotonic() - start, 2), "notes": result.notes, "problem": result.problem}
        line = f"{'sandboxed' if sandboxed else 'unsandboxed'} {student}: {per[student]}"
        print(line, flush=True)
        with open(log, "a") as f:  # as it goes: a run cut short still leaves its numbers
            f.write(line + "\n")
    export.write_feedback(course, assignment)
    export.export_gradebook(course)
    rows = export.grade_rows(course, assignment, list(per), {s: (v["notes"], v["problem"]) for s, v in per.items()})
    for row in rows:
        per[row.student]["score"] = row.score
        per[row.student]["expected"] = expected[(row.student, assignment)]
    return per


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--assignment", default="problem3")
    parser.add_argument("--samples", nargs="+",
                        default=["correct", "unmasked_tail", "no_alpha_rescale", "no_normalisation", "correct_noisy"])
    args = parser.parse_args()
    runtime = device.configure()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch
    import triton

    runs = {}
    for mode in ("sandboxed", "unsandboxed"):
        runs[mode] = grade_once(out / f"course-{mode}", args.assignment, args.samples, mode == "sandboxed",
                                out / "progress.log")
    lines = [f"{'submission':<22} {'sandboxed s':>12} {'unsandboxed s':>14} {'score':>6} {'same':>5}"]
    for student in runs["sandboxed"]:
        a, b = runs["sandboxed"][student], runs["unsandboxed"][student]
        lines.append(f"{student:<22} {a['seconds']:>12.1f} {b['seconds']:>14.1f} {a['score']!s:>6} "
                     f"{str(a['score'] == b['score'] == a['expected']):>5}")
    total = {m: sum(v["seconds"] for v in r.values()) for m, r in runs.items()}
    overhead = total["sandboxed"] / total["unsandboxed"] - 1
    lines.append(f"total: sandboxed {total['sandboxed']:.1f} s, unsandboxed {total['unsandboxed']:.1f} s, "
                 f"overhead {overhead:+.1%}; median per submission "
                 f"{statistics.median(v['seconds'] for v in runs['sandboxed'].values()):.1f} s vs "
                 f"{statistics.median(v['seconds'] for v in runs['unsandboxed'].values()):.1f} s")
    print("\n".join(lines))
    where = torch.cuda.get_device_name(0) if not runtime.interpreter else f"CPU interpreter ({platform.processor()})"
    (out / "sandbox-overhead.json").write_text(json.dumps({
        "device": where, "torch": torch.__version__, "triton": triton.__version__,
        "command": " ".join(sys.argv), "runs": runs, "total_s": total, "overhead": overhead,
        "table": lines}, indent=1))
    same = all(runs["sandboxed"][s]["score"] == runs["unsandboxed"][s]["score"] == runs["sandboxed"][s]["expected"]
               for s in runs["sandboxed"])
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
