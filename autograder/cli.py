"""`autograder` command line: one entry point for the instructor's steps.

    autograder env                         where kernels run here, and the versions
    autograder release                     regenerate notebooks/ from solutions/ (nbgrader)
    autograder sync-sources [--check]      bring each solutions/*/*.ipynb and its paired .py in line
    autograder demo [--ray]                grade the bundled sample submissions end to end

    A class, step by step (COURSE is a folder of its own, outside this repository):
    autograder course init COURSE          make COURSE an nbgrader course folder ready for
                                           submissions (run again: updates it, keeps submissions
                                           and grades)
    autograder import COURSE ZIP --assignment A
                                           put each student's notebook of a Canvas or Moodle zip at
                                           COURSE/submitted/<student>/A/ (or copy nbgrader's
                                           submitted/<student>/A/A.ipynb there yourself)
    autograder grade COURSE [--assignment A ...] [--ray [--address ADDR]]
                                           autograde the submissions: COURSE/grades.csv,
                                           grade_report.csv, feedback/<student>/A/A.html
                                           (--ray: one task per submission on a Ray cluster)

    autograder bench [--problem N]         time a reference kernel against PyTorch (GPU; problem2b:
                                           the softmax kernel's GB/s against the GPU's bandwidth)
    autograder publish DEST                write the student edition (no solutions, no grading) to DEST
"""
# Each command imports what it needs when it runs: the grading modules bring in torch, which
# `--help` and `env` should not wait for, and `env` must configure the device before triton.
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _repo(args) -> Path:
    root = Path(args.repo).resolve()
    if not (root / "solutions").is_dir():
        sys.exit(f"{root} has no solutions/ folder: run this from the course repository or pass --repo")
    return root


def cmd_env(args):
    from . import device
    from .benchmark import environment

    runtime = device.configure()
    for key, value in environment().items():
        print(f"{key:>10}: {value}")
    return 0 if runtime else 1


def cmd_release(args):
    from . import notebook_template, paired_sources
    from .grading.course import init_course, release_path
    from .grading.scratch import ASSIGNMENTS

    repo = _repo(args)
    chosen = args.assignments or list(ASSIGNMENTS)
    # The shared badge and setup cells come from autograder/course_config.py: bring each source
    # notebook in line first, so the student notebooks carry the course's current address. Edits
    # made in the paired .py reach the notebook first, and the template's back in the .py after.
    for assignment in chosen:
        source = repo / "solutions" / assignment / f"{ASSIGNMENTS[assignment]}.ipynb"
        paired_sources.sync(source, "newer")
        if notebook_template.apply_to_file(source, assignment):
            paired_sources.sync(source, "notebook")
            print(f"updated the badge and setup cells of {source} and {paired_sources.text_path(source).name}")
    # Chapters with nothing to hand in are written in notebooks/ directly: only the template's cells.
    for chapter in notebook_template.CHAPTERS if not args.assignments else ():
        if notebook_template.apply_to_file(repo / "notebooks" / chapter / f"{chapter}.ipynb", chapter):
            print(f"updated the badge and setup cells of notebooks/{chapter}/{chapter}.ipynb")
    # One work folder per selection, so releasing different problems at once cannot collide.
    work = repo / "build" / ("release-" + "-".join(args.assignments) if args.assignments else "release")
    if work.exists():
        shutil.rmtree(work)
    init_course(repo, work, chosen)
    for assignment in chosen:
        generated = release_path(work, assignment)
        target = repo / "notebooks" / assignment
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(generated, target / generated.name)
        print(f"wrote {target / generated.name}")
    return 0


def cmd_sync_sources(args):
    from . import paired_sources

    missing = [a for a in args.assignments if not (_repo(args) / "solutions" / a).is_dir()]
    if missing:
        sys.exit(f"no such folder in solutions/: {', '.join(missing)}")
    notebooks = paired_sources.source_notebooks(_repo(args), args.assignments)
    if args.check:
        differing = [(nb, paired_sources.first_difference(nb)) for nb in notebooks]
        differing = [(nb, diff) for nb, diff in differing if diff]
        for nb, diff in differing:
            print(f"{nb.parent.name}: {diff}")
        print("run `python -m autograder sync-sources`" if differing else f"{len(notebooks)} pairs agree")
        return 1 if differing else 0
    for nb in notebooks:
        paired_sources.sync(nb, args.source)
        print(f"in line: {nb.relative_to(_repo(args))} and {paired_sources.text_path(nb).name}")
    return 0


def _grader(args):
    """The grader the command line asks for: on Ray (after making sure Ray is installed), or one
    submission after another."""
    from .grading.autograde import OneAfterAnother

    if not args.ray:
        return OneAfterAnother()
    try:
        import ray  # noqa: F401
    except ImportError:
        sys.exit("--ray needs Ray: pip install -e '.[scale]' (on every machine of the cluster)")
    from .grading.ray_grading import RayGrader

    return RayGrader(address=args.address, num_cpus=args.num_cpus, gpus_per_task=args.gpus_per_task,
                     trace_dir=args.trace_dir)


def _add_ray_arguments(p):
    g = p.add_argument_group("grading on Ray (pip install -e '.[scale]')")
    g.add_argument("--ray", action="store_true",
                   help="one Ray task per (student, assignment), on this machine or a Ray cluster")
    g.add_argument("--address", default=None,
                   help="an existing Ray cluster ('auto', 'HOST:6379', 'ray://HOST:10001'); default: start one here")
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs of the Ray instance started here")
    g.add_argument("--gpus-per-task", type=float, default=None,
                   help="GPU share of one task (default 1 where there are GPUs, so each task times "
                        "kernels on a GPU of its own; 0.5 lets two tasks share one)")
    g.add_argument("--trace-dir", default=None, help="write where each task ran (host, PID, attempt) here")


def cmd_demo(args):
    from . import device
    from .grading.autograde import format_run
    from .grading.demo import run_demo
    from .grading.export import summary

    grader = _grader(args)
    runtime = device.configure()  # the graded kernels inherit TRITON_INTERPRET from here
    course = Path(args.workdir).resolve()
    run, expected = run_demo(_repo(args), course, adversarial=args.adversarial, class_size=args.class_size,
                             grader=grader, sandbox_mode="off" if args.no_sandbox else "auto")
    print()
    print(summary(run.rows, expected))
    print()
    print(format_run(run))
    print(f"\nnbgrader export: {course / 'grades.csv'}   report: {course / 'grade_report.csv'}")
    print(f"feedback: {course / 'feedback'}   plot: {course / 'grades.png'}")
    if runtime.interpreter:
        print("Graded on the CPU through Triton's interpreter (bfloat16 cases ran as float16).")
    ok = all(r.score == expected.get((r.student, r.assignment)) for r in run.rows)
    return 0 if ok else 1


def cmd_course_init(args):
    from .grading.course import init_course
    from .problems import ASSIGNMENTS

    unknown = [a for a in args.assignment or () if a not in ASSIGNMENTS]
    if unknown:
        sys.exit(f"unknown assignment {', '.join(unknown)}; known: {', '.join(ASSIGNMENTS)}")
    course = Path(args.course).resolve()
    if course == _repo(args) or course in _repo(args).parents:
        sys.exit(f"{course} holds this repository; a course folder needs a folder of its own")
    if course.exists() and not course.is_dir():
        sys.exit(f"{course} is a file, not a folder")
    print(f"releasing {', '.join(args.assignment or ASSIGNMENTS)} into {course} (nbgrader generate_assignment) ...")
    try:
        report = init_course(_repo(args), course, args.assignment)
    except RuntimeError as exc:  # nbgrader refused, e.g. a graded cell removed that has grades
        sys.exit(f"course init stopped; what nbgrader said:\n{exc}")
    print(report.describe())
    return 0


def cmd_import(args):
    from .grading.lms_import import ImportRefused, import_zip

    course = Path(args.course).resolve()
    if not course.is_dir():
        sys.exit(f"no course folder {course}: make it with `python -m autograder course init {args.course}`")
    try:
        report = import_zip(course, Path(args.zip), args.assignment, replace=args.replace)
    except ImportRefused as exc:
        sys.exit(f"import refused, nothing changed: {exc}")
    print(report.describe())
    print(f"report: {report.path}")
    return 0 if report.complete else 1


def cmd_grade(args):
    from . import device
    from .grading.autograde import format_run, grade, sandbox_choice
    from .grading.course import INIT_COMMAND, assignments_with_submissions, missing_for_grading, submitted_students
    from .grading.export import summary, write_report
    from .grading.sandbox import SandboxUnavailable
    from .problems import ASSIGNMENTS

    grader = _grader(args)
    device.configure()
    course = Path(args.course).resolve()
    unknown = [a for a in args.assignment or () if a not in ASSIGNMENTS]
    if unknown:
        sys.exit(f"unknown assignment {', '.join(unknown)}; known: {', '.join(ASSIGNMENTS)}")
    assignments = args.assignment or assignments_with_submissions(course)
    lacking = missing_for_grading(course, assignments)
    if lacking:
        sys.exit(f"{course} is not a course folder ready for grading; it lacks:\n  " + "\n  ".join(lacking)
                 + f"\nRun `{INIT_COMMAND} {args.course}`: it adds what is missing and keeps the submissions.")
    missing = [a for a in assignments if not submitted_students(course, a)]
    if not assignments or missing:
        sys.exit(f"no submissions under {course / 'submitted'}/<student>/{missing[0] if missing else '<assignment>'}/"
                 f"<notebook>.ipynb (copy them there, or `python -m autograder import {args.course} ZIP "
                 "--assignment A` for an LMS zip)")
    try:
        sandboxed = sandbox_choice("off" if args.no_sandbox else "required")
    except SandboxUnavailable as exc:
        sys.exit(str(exc))
    run = grade(course, assignments, grader=grader, regrade=args.regrade, sandboxed=sandboxed)
    write_report(run.rows, course)
    print(summary(run.rows))
    print()
    print(format_run(run))
    return 0


def cmd_bench(args):
    import torch

    from . import benchmark as bench
    from . import problems

    if not torch.cuda.is_available():
        sys.exit("autograder bench needs a CUDA GPU; under the CPU interpreter timings mean nothing")
    if args.problem != "problem3":
        return _bench_problem(args)
    module = problems.reference_module("problem3", _repo(args))
    impls = {"reference kernel": lambda q, k, v: module.flash_attention_forward(q, k, v)[0], **bench.peers()}
    if args.no_naive:
        impls.pop("naive PyTorch")
    dtype = getattr(torch, args.dtype)
    shapes = [(args.batch or 4, args.heads or 16, n, d) for d in args.dims or [16, 64, 128]
              for n in args.lengths or [1024, 2048, 4096, 8192, 16384]]
    rows = bench.run_benchmark(impls, shapes, dtype=dtype)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench.save(rows, out / "bench.json")
    bench.plot(rows, out / "bench.png", title=f"{torch.cuda.get_device_name(0)}, {args.dtype}, "
                                              f"B={shapes[0][0]} H={shapes[0][1]}")
    print(bench.format_table(rows))
    print()
    print(bench.speedup_table(rows, "reference kernel"))
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'}")
    return 0


def _shape_overrides(args, benchmark) -> dict:
    """The --lengths/--dims/--batch/--heads given on the command line, under the names the problem's
    benchmark takes (head_dims, or head_dim for one); a problem whose benchmark has no such
    parameter says so instead of ignoring it."""
    import inspect

    takes = inspect.signature(benchmark).parameters
    given = {"lengths": tuple(args.lengths) if args.lengths else None, "batch": args.batch, "heads": args.heads}
    if args.dims:
        given["head_dims" if "head_dims" in takes else "head_dim"] = (
            tuple(args.dims) if "head_dims" in takes else args.dims[0])
        if "head_dims" not in takes and len(args.dims) > 1:
            sys.exit(f"{args.problem}'s benchmark takes one head dimension: give one --dims")
    if args.causal is not None:
        given["causal"] = {"yes": (True,), "no": (False,), "both": (False, True)}[args.causal]
    given = {name: value for name, value in given.items() if value is not None}
    unknown = [name for name in given if name not in takes]
    if unknown:
        sys.exit(f"{args.problem}'s benchmark has no {', '.join(unknown)} to set")
    return given


def _bench_problem(args):
    """Problems 2b and 4-8: the reference kernel through the problem's own benchmark (its peers:
    torch.softmax and the GPU's bandwidth; SDPA causal, SDPA with enable_gqa, FlexAttention with
    the same block mask; SDPA flash's backward, FlexAttention's backward), at its default shapes."""
    import json

    from .benchmark import environment
    from .problems import get, reference_module

    module = get(args.problem)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shapes = _shape_overrides(args, module.benchmark)
    if args.problem in ("problem7", "problem8"):  # backwards: time the differentiable attention, write their JSON
        kernels = reference_module(module.SPEC, _repo(args))
        attention = kernels.flash_attention if args.problem == "problem7" else kernels.flash_attention_window
        module.benchmark(attention, plot_path=out / f"{args.problem}.png", json_path=out / f"{args.problem}.json",
                         **shapes)
        return 0
    reference = getattr(reference_module(module.SPEC, _repo(args)), module.SPEC.kernel_function)
    result = module.benchmark(reference, plot_path=out / f"{args.problem}.png", **shapes)
    (out / f"{args.problem}.json").write_text(json.dumps({"environment": environment(), "result": result},
                                                         indent=1, default=str))
    print(f"\nwrote {out / (args.problem + '.json')} and {out / (args.problem + '.png')}")
    return 0


def cmd_publish(args):
    from . import edition

    repo = _repo(args)
    dest = Path(args.dest).resolve()
    if dest == repo or dest in repo.parents:
        sys.exit(f"{dest}: publish into a folder of its own, not the course repository or a folder above it")
    try:
        edition.publish(dest, repo)
    except edition.LeakFound as exc:  # what would give a solution away, file by file; DEST is untouched
        sys.exit(str(exc))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autograder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=str(REPO_ROOT), help="course repository (default: this checkout)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("env", help="show where kernels run and the versions").set_defaults(func=cmd_env)
    p = sub.add_parser("release", help="regenerate notebooks/ from solutions/")
    p.add_argument("assignments", nargs="*")
    p.set_defaults(func=cmd_release)
    p = sub.add_parser("sync-sources", help="bring each source notebook and its paired .py (jupytext) in line")
    p.add_argument("assignments", nargs="*", help="default: every folder of solutions/")
    p.add_argument("--source", default="newer", choices=["newer", "notebook", "text"],
                   help="which file gives the cells: the more recently modified one (default), "
                        "the .ipynb, or the .py")
    p.add_argument("--check", action="store_true", help="change nothing; say where a pair differs (exit 1)")
    p.set_defaults(func=cmd_sync_sources)
    p = sub.add_parser("demo", help="grade the bundled sample submissions through nbgrader")
    p.add_argument("--workdir", default=str(REPO_ROOT / "build" / "demo-course"))
    p.add_argument("--adversarial", action="store_true",
                   help="also grade submissions that crash, loop, tamper or arrive broken")
    p.add_argument("--class-size", type=int, default=0,
                   help="hand the samples in again under other names until there are this many submissions")
    p.add_argument("--no-sandbox", action="store_true",
                   help="grade without the sandbox even where it could start (not with --adversarial)")
    _add_ray_arguments(p)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("course", help="a course folder for a class: `course init COURSE`")
    course_sub = p.add_subparsers(dest="course_command", required=True)
    p = course_sub.add_parser(
        "init", help="make COURSE an nbgrader course folder ready for submissions (run again to update it)",
        description="Make COURSE an nbgrader course folder ready for submissions: nbgrader_config.py, the "
                    "source notebooks copied from this repository's solutions/, every problem released to "
                    "notebooks/ (nbgrader generate_assignment), and the gradebook build/gradebook.db with "
                    "each assignment, notebook, cell and point. On an existing course folder it brings "
                    "sources and releases up to date and keeps submissions, grades, the gradebook, "
                    "feedback, exports and an edited nbgrader_config.py, saying what it kept.")
    p.add_argument("course", help="the course folder (made if missing; not inside this repository)")
    p.add_argument("--assignment", nargs="+", default=None,
                   help="release only these problems (default: every one)")
    p.set_defaults(func=cmd_course_init)
    p = sub.add_parser(
        "import", help="put the notebooks of an LMS zip (Canvas, Moodle) into COURSE/submitted/",
        description="Put each student's notebook of a zip downloaded from Canvas ('Download Submissions': "
                    "<lastfirst>_<userid>_<submissionid>_<file>.ipynb, `late_` when late) or Moodle "
                    "('Download all submissions': <Full Name>_<id>_assignsubmission_file_/<file>.ipynb) at "
                    "COURSE/submitted/<student>/A/A.ipynb, nbgrader's layout, with a stable student id "
                    "(<lastfirst>-<userid> for Canvas, the name's slug for Moodle). Prints and writes "
                    "(COURSE/imports/) a report of what was imported, skipped, refused and not matched; "
                    "exits 1 when a student's notebook was not imported. Never extracts the zip: no entry "
                    "can write outside COURSE/submitted/.")
    p.add_argument("course", help="the course folder (from `course init`)")
    p.add_argument("zip", help="the zip the LMS gave")
    p.add_argument("--assignment", required=True, help="the problem these are submissions of, e.g. problem1")
    p.add_argument("--replace", action="store_true",
                   help="replace a student's submission already in the course (default: keep it, and say so); "
                        "the next `grade` grades the replaced ones again")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("grade", help="autograde the submissions of a course folder")
    p.add_argument("course", help="the course folder (from `course init`)")
    p.add_argument("--assignment", nargs="+", default=None,
                   help="the assignments to grade (default: every one with submissions)")
    p.add_argument("--regrade", action="store_true", help="grade again what an earlier run already graded")
    p.add_argument("--no-sandbox", action="store_true",
                   help="UNSAFE: grade without the sandbox (student code then runs with the grader's rights); "
                        "every row of grade_report.csv says so")
    _add_ray_arguments(p)
    p.set_defaults(func=cmd_grade)
    p = sub.add_parser("bench", help="benchmark the reference kernel against PyTorch (GPU only)")
    p.add_argument("--problem", default="problem3",
                   choices=["problem2b", "problem3", "problem4", "problem5", "problem6", "problem7", "problem8"],
                   help="problem 3: the reference forward against PyTorch's attentions; 2b and 4-8: each problem's own "
                        "shapes (--dims/--lengths/--batch/--heads/--causal override them where it has them) "
                        "and peers (2b: GB/s of the softmax kernel against torch.softmax and the GPU's bandwidth; "
                        "7: forward+backward and backward against SDPA flash)")
    p.add_argument("--dims", type=int, nargs="+", default=None,
                   help="head dimensions (problem 3: 16 64 128; others: their benchmark's own unless given)")
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="sequence lengths (problem 3: 1024 to 16384; others: their benchmark's own unless given)")
    p.add_argument("--batch", type=int, default=None, help="batch size (problem 3: 4)")
    p.add_argument("--heads", type=int, default=None, help="query heads (problem 3: 16)")
    p.add_argument("--causal", choices=["yes", "no", "both"], default=None,
                   help="problem 7: time the causal case, the non-causal one or both (the default)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--no-naive", action="store_true", help="skip the materialising PyTorch peer")
    p.add_argument("--out", default=str(REPO_ROOT / "build" / "bench"))
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("publish", help="write the student edition: notebooks and the student-facing package")
    p.add_argument("dest", help="the edition's folder, e.g. a clone of the student repository "
                                "(emptied first, .git kept)")
    p.set_defaults(func=cmd_publish)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command not in STUDENT_COMMANDS and not _is_course_repository():
        sys.exit(f"`autograder {args.command}` is an instructor's command: this is the student edition of "
                 f"the course, without solutions or the grading pipeline (here: {', '.join(STUDENT_COMMANDS)})")
    return args.func(args)


STUDENT_COMMANDS = ("env", "bench")  # what the student edition can run


def _is_course_repository() -> bool:
    """False in the student edition, which ships without the grading pipeline (autograder.edition)."""
    import importlib.util

    return importlib.util.find_spec("autograder.grading") is not None


if __name__ == "__main__":
    sys.exit(main())
