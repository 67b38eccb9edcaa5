"""Grading the submissions of a course folder, with one driver for every way of running it.

  driver (this process)                              grader (chosen by the caller)
  ------                                             ------
  intake of each submission (triage)
  a template of the course: config, a gradebook
  without submissions, source and release
  notebooks (scratch.course_template)            ->  grades each submission in a scratch course
                                                     of its own (scratch.grade_in_scratch):
                                                     OneAfterAnother here, or RayGrader
                                                     (ray_grading) as tasks anywhere in a cluster
  records each result in the course              <-  hands every outcome to the driver's Tally
  (scratch.record_result), one at a time
  feedback, nbgrader's export, the grade rows (export)

A grader decides only where submissions are graded and how many at a time. Everything the course
ends up holding is written by the driver, the same way whichever grader ran, so the grades and
exports do not depend on the grader. nbgrader's gradebook is one SQLite file: no grading task
ever opens it, only the driver. A submission counts as graded once the driver has recorded it,
so running the command again grades what is left and nothing twice.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tqdm.auto import tqdm

from ..notebook_code import read
from . import sandbox
from .course import (
    INIT_COMMAND,
    assignments_with_submissions,
    missing_for_grading,
    release_path,
    submitted_students,
    use_judge_cache,
)
from .export import export_gradebook, grade_rows, has_feedback, write_feedback_all
from .intake import inspect_submission
from .scratch import (
    ASSIGNMENTS,
    SubmissionResult,
    course_template,
    grade_in_scratch,
    handed_in,
    is_graded,
    record_result,
)


@dataclass
class Job:
    """One submission to grade."""
    assignment: str
    student: str
    notes: list                     # from intake, before any grading


@dataclass
class GradingRun:
    """What one grading run did."""
    rows: list                                              # SubmissionGrade, per assignment in order
    counts: dict = field(default_factory=dict)              # assignment -> Counter of outcomes
    failures: list = field(default_factory=list)            # (assignment, student, [reasons])
    task_seconds: list = field(default_factory=list)        # per graded submission, where it was graded
    hosts: Counter = field(default_factory=Counter)         # node -> submissions graded there
    wall_s: float = 0.0
    slots: int = 0                                          # submissions graded at once (0: none graded)
    how: str = ""                                           # the grader's words for how it ran
    gpus_per_task: float | None = None                      # GPU share of one grading, where the grader allots GPUs


@dataclass
class Work:
    """What grading a submission needs besides the submission itself."""
    course_root: Path
    common: dict                    # scratch.course_template: files every scratch course holds
    templates: dict                 # assignment -> its files in a scratch course
    sandboxed: bool

    def submission(self, job: Job) -> dict:
        return handed_in(self.course_root, job.assignment, job.student)


class Tally:
    """Where a grader hands each outcome, in the driver's thread: the result goes into the course
    (the only writer of its gradebook), the run's counts and the progress bar follow."""

    def __init__(self, course_root: Path, run: GradingRun, outcome: dict, total: int, label: str, progress: bool):
        self.course_root, self.run, self.outcome, self.total = course_root, run, outcome, total
        self.done: Counter[str] = Counter()
        self.bar = tqdm(total=total, desc=label, unit="submission", disable=not progress)

    def running(self, slots: int, how: str, gpus_per_task: float | None = None) -> None:
        """What the grader says about itself: how many at a time, and how."""
        self.run.slots, self.run.how, self.run.gpus_per_task = slots, how, gpus_per_task
        self._show()

    def graded(self, job: Job, result: SubmissionResult) -> None:
        record_result(self.course_root, result)
        self.outcome[(job.assignment, job.student)] = (job.notes + result.notes, result.problem)
        self.run.counts[job.assignment]["graded"] += 1
        self.run.task_seconds.append(result.seconds)
        self.run.hosts[result.host] += 1
        self._advance("graded")

    def failed(self, job: Job, reasons: list) -> None:
        """Grading this submission failed for good: it is recorded with the reasons, ungraded."""
        self.outcome[(job.assignment, job.student)] = (
            job.notes + [f"attempt {i + 1}: {r}" for i, r in enumerate(reasons)],
            f"grading task failed {len(reasons)} times, not graded (last: {reasons[-1]})")
        self.run.counts[job.assignment]["failed"] += 1
        self.run.failures.append((job.assignment, job.student, reasons))
        self._advance("failed")

    def retried(self, job: Job, reason: str) -> None:
        self.run.counts[job.assignment]["retried"] += 1
        self.done["retried"] += 1
        self._show()

    def close(self) -> None:
        self.bar.close()

    def _advance(self, outcome: str) -> None:
        self.done[outcome] += 1
        self.bar.update(1)
        self._show()

    def _show(self) -> None:
        left = self.total - self.done["graded"] - self.done["failed"]
        self.bar.set_postfix_str(f"done {self.done['graded']}, failed {self.done['failed']}, left {left}, "
                                 f"retried {self.done['retried']}")


class Grader(Protocol):
    """How the submissions of a run are graded: each by scratch.grade_in_scratch, with `work`'s
    template, every outcome handed to `tally` in the calling thread, one at a time."""

    label: str  # the progress bar's title

    def grade(self, jobs: list[Job], work: Work, tally: Tally) -> None: ...


class OneAfterAnother:
    """Every submission in this process, one after another."""

    label = "autograde"

    def grade(self, jobs: list[Job], work: Work, tally: Tally) -> None:
        tally.running(1, "one submission after another, in this process")
        for job in jobs:
            tally.graded(job, grade_in_scratch(work.common, work.templates[job.assignment], work.submission(job),
                                               job.assignment, job.student, sandboxed=work.sandboxed))


def sandbox_choice(mode: str) -> bool:
    """Whether to grade in the sandbox. mode "required": yes, or stop with the reason when it cannot
    start (fail closed); "off": no (--no-sandbox, every row says so); "auto": where it can (the
    demo of the course's own sample submissions), saying so plainly where it cannot."""
    if mode == "off":
        return False
    status = sandbox.probe()
    if status.available:
        return True
    if mode == "required":
        raise sandbox.SandboxUnavailable(
            f"grading stopped: the sandbox for student code cannot start. {status.reason} "
            "(To grade anyway, unsafely, pass --no-sandbox: every grade is then marked as unsandboxed.)")
    print(f"NOTE: running WITHOUT the sandbox: {status.reason}")
    return False


def triage(course_root: Path, assignment: str, student: str, release_nb, regrade=False) -> tuple[list[str], str, bool]:
    """Intake of one submission before any grading: (notes, problem, needs_grading).

    Already-graded submissions are kept unless `regrade`; one that cannot be graded gets its
    reason as `problem`.
    """
    notes, gradable = inspect_submission(course_root / "submitted" / student / assignment,
                                         ASSIGNMENTS[assignment], release_nb)
    if not regrade and is_graded(course_root, assignment, student):
        return notes + ["already graded; kept (use --regrade to grade again)"], "", False
    if not gradable:
        return notes, notes[0], False
    return notes, "", True


def grade(course_root: Path, assignments=None, *, grader: Grader | None = None, regrade: bool = False,
          sandboxed: bool = True, progress: bool = True) -> GradingRun:
    """Grade every submission of `assignments` (default: each one with submissions) with `grader`
    (default: OneAfterAnother), write feedback and nbgrader's grades.csv, and return the run,
    its grade rows included."""
    course_root = Path(course_root).resolve()
    grader = grader or OneAfterAnother()
    use_judge_cache(course_root)  # graders on this machine share it
    chosen = list(assignments or assignments_with_submissions(course_root))
    if not chosen:
        raise FileNotFoundError(f"no submissions under {course_root / 'submitted'}/<student>/<assignment>/")
    lacking = missing_for_grading(course_root, chosen)
    if lacking:
        raise FileNotFoundError(f"{course_root} is not a course folder ready for grading (run `{INIT_COMMAND} "
                                f"{course_root}`); it lacks: " + "; ".join(lacking))
    wall = time.monotonic()
    run = GradingRun([])

    # Intake, assignment by assignment, student by student: jobs are graded, and students enter the
    # gradebook, in this order whatever the grader, so the exports match.
    outcome, jobs, students_of = {}, [], {}
    for assignment in chosen:
        students = submitted_students(course_root, assignment)
        if not students:
            raise FileNotFoundError(f"no submissions under {course_root / 'submitted'}/<student>/{assignment}/")
        students_of[assignment] = students
        release_nb = read(release_path(course_root, assignment))
        counts = run.counts.setdefault(assignment, Counter())
        for student in students:
            notes, problem, needs = triage(course_root, assignment, student, release_nb, regrade)
            outcome[(assignment, student)] = (notes, problem)
            if needs:
                jobs.append(Job(assignment, student, notes))
            else:
                counts["kept" if not problem else "not gradable"] += 1

    if jobs:
        enrol([job.student for job in jobs], course_root)
        common, templates = course_template(course_root, {job.assignment for job in jobs})
        tally = Tally(course_root, run, outcome, len(jobs), grader.label, progress)
        try:
            grader.grade(jobs, Work(course_root, common, templates, sandboxed), tally)
        finally:
            tally.close()

    write_feedback_all(course_root, [a for a in chosen if _feedback_needed(course_root, a, students_of[a], run)])
    export_gradebook(course_root)
    for assignment in chosen:
        students = students_of[assignment]
        run.rows += grade_rows(course_root, assignment, students, {s: outcome[(assignment, s)] for s in students})
    run.wall_s = time.monotonic() - wall
    return run


def enrol(students, course_root: Path) -> None:
    """Add students to the gradebook in the order nbgrader autograde would have met them."""
    from nbgrader.api import Gradebook  # nbgrader is imported only where grading needs it

    with Gradebook(f"sqlite:///{course_root / 'build' / 'gradebook.db'}") as gb:
        for student in dict.fromkeys(students):
            gb.update_or_create_student(student)


def _feedback_needed(course_root: Path, assignment: str, students, run: GradingRun) -> bool:
    """Regenerate feedback when this run recorded a grade, or some graded submission has none."""
    if run.counts[assignment]["graded"]:
        return True
    return any(is_graded(course_root, assignment, s) and not has_feedback(course_root, assignment, s)
               for s in students)


def format_run(run: GradingRun) -> str:
    """The final summary: outcomes per assignment, throughput, and every failure with its reasons."""
    kinds = ("graded", "kept", "not gradable", "failed", "retried")
    width = max([len(a) for a in run.counts] + [10])
    lines = [f"{'assignment':<{width}}  {'submissions':>11}  " + "  ".join(f"{k:>12}" for k in kinds),
             "-" * (width + 15 + 14 * len(kinds))]
    total: Counter[str] = Counter()
    for assignment, counts in run.counts.items():
        n = sum(counts[k] for k in kinds[:4])
        total.update(counts)
        total["submissions"] += n
        lines.append(f"{assignment:<{width}}  {n:>11}  " + "  ".join(f"{counts[k]:>12}" for k in kinds))
    lines.append(f"{'all':<{width}}  {total['submissions']:>11}  " + "  ".join(f"{total[k]:>12}" for k in kinds))
    where = ", ".join(f"{h}: {n}" for h, n in run.hosts.most_common())
    lines.append("")
    if run.slots:
        lines.append(f"wall time {run.wall_s:.1f} s; {run.how}" + (f"; graded on {where}" if where else ""))
    else:
        lines.append(f"wall time {run.wall_s:.1f} s; nothing left to grade")
    if run.task_seconds:
        secs = sorted(run.task_seconds)
        lines.append(f"per submission: median {secs[len(secs) // 2]:.1f} s, longest {secs[-1]:.1f} s, "
                     f"sum {sum(secs):.1f} s")
    for assignment, student, reasons in run.failures:
        lines.append(f"FAILED {student} / {assignment}: " + " | ".join(reasons))
    return "\n".join(lines)
