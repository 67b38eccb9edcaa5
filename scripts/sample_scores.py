"""Score the bundled samples whose mistake is in their code with every graded test of the source
notebook (hidden tests and performance points included), without nbgrader, and compare each
score with what the sample deserves.

    python scripts/sample_scores.py [--problems problem4 problem6] [--jobs 4] [--out scores.json]

Each sample runs in a fresh interpreter through the grader's own clean re-run
(`autograder.grading.verify`), so a result here is what grading gives the same answer cell on
this machine. For a GPU runner after a kernel or tile change: faster than a full demo, and it
shows which test moved. Samples whose fault is in the submission itself (extra cells, edited
locked cells, broken files) need nbgrader: `autograder demo` grades those. Exits non-zero when
a score differs from its expectation.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autograder.grading.samples import SAMPLES, build_submission, expected_score  # noqa: E402
from autograder.grading.verify import verify  # noqa: E402
from autograder.notebook_code import read  # noqa: E402
from autograder.problems import ASSIGNMENTS, get_spec  # noqa: E402


def code_only(sample) -> bool:
    """A sample whose whole mistake is its answer cell (what the clean re-run grades)."""
    return not (sample.extra_cell or sample.locked_edits or sample.raw is not None or sample.missing
                or sample.kernelspec or sample.filename or sample.answer_suffix)


def points_of_tests(source_nb) -> dict:
    return {c.metadata.nbgrader["grade_id"]: float(c.metadata.nbgrader.get("points", 0))
            for c in source_nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")}


def score_sample(assignment, sample, workdir: Path) -> dict:
    spec = get_spec(assignment)
    source_path = REPO / "solutions" / assignment / spec.notebook
    release_path = REPO / "notebooks" / assignment / spec.notebook
    source_nb, release_nb = read(source_path), read(release_path)
    submission = workdir / f"{assignment}-{sample.name}.ipynb"
    nbformat.write(build_submission(sample, source_nb, release_nb, spec.student_cell, spec.kernel_cells[-1]),
                   str(submission))
    start = time.monotonic()
    outcome = verify(submission, source_path, release_path, spec.kernel_cells, spec.student_cell,
                     policy=spec.answer_policy, assignment=assignment)
    points = points_of_tests(source_nb)
    got, failed = 0.0, []
    for test, worth in points.items():
        passed, message = outcome.results.get(test, (False, "did not run"))
        if passed:
            got += min(worth, outcome.scores.get(test, worth))
        else:
            failed.append(f"{test}: {message[:90]}")
        if passed and test in outcome.scores and outcome.scores[test] < worth:
            failed.append(f"{test}: {outcome.scores[test]:g} of {worth:g}")
    expected = expected_score(sample, assignment)
    return {"assignment": assignment, "sample": sample.name, "score": got, "expected": expected,
            "ok": got == expected, "seconds": round(time.monotonic() - start, 1),
            "violations": outcome.violations, "error": outcome.error, "lost": failed}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=[a for a in ASSIGNMENTS if a not in ("problem1", "problem2")])
    parser.add_argument("--jobs", type=int, default=2, help="samples verified at once")
    parser.add_argument("--out", default=None, help="write the results here as JSON")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sample-scores-"))
    todo = [(a, s) for a in args.problems for s in SAMPLES[a] if code_only(s) and s.expected_points is not None]
    print(f"{len(todo)} samples of {', '.join(args.problems)}, {args.jobs} at a time", flush=True)
    results = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for result in pool.map(lambda item: score_sample(*item, work), todo):
            mark = "ok  " if result["ok"] else "DIFF"
            print(f"{mark} {result['assignment']:9s} {result['sample']:24s} {result['score']:5g} "
                  f"(expected {result['expected']:g}, {result['seconds']:.0f} s)"
                  + "".join(f"\n       lost {line}" for line in result["lost"])
                  + (f"\n       error: {result['error']}" if result["error"] else ""), flush=True)
            results.append(result)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    bad = [r for r in results if not r["ok"]]
    print(f"{len(results) - len(bad)} of {len(results)} samples scored as expected")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
