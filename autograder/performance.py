"""Performance points: the student's kernel timed against the reference kernel, as a ratio.

Both kernels run on the same device, in the same process, on the same inputs, taking turns, so
what a grade says does not depend on which GPU graded it (a T4, an A100 or an H100) or on what
else that GPU was doing: only on how the student's kernel compares with the course's.

    ratio = median over rounds of (student time / reference time)

Each round times the student's kernel, then the reference (the order alternates between
rounds), each over several input sets of the same shape, so a kernel cannot look fast because
its inputs stayed in L2 (triton.testing.do_bench also clears L2 before every call on a GPU).
A median of per-round ratios ignores a round that another process disturbed. Under the
interpreter a round is one call of each, back to back, timed in CPU time of the calling thread,
so the two calls of a pair see the same neighbours on a busy machine.
Tasks that share a GPU (or, under the interpreter, a machine) take a lock around their timing,
so two submissions are never timed at once on the same device.

Bands (`BANDS`): ratio <= 1.3 earns all the points, <= 1.6 half, slower none. The edges sit far
from where kernels land: a kernel that does what the reference does measures 0.95-1.1, one that
does twice the work (no block skipping, K/V read once per query head) 1.9 or more.

Without a GPU (`award` under the Triton interpreter) the ratio is not timed: CPU time does not
rank kernels as a GPU does (numpy runs a float32 dot as fast as a float16 one). Instead each
kernel runs once on the same inputs with counters on what it asks of a GPU, each count is priced
with an H200's peak rates (autograder.counted_cost), and the ratio of the two prices goes through
the same bands:

    ratio = counted cost of the student's kernel / counted cost of the reference kernel
"""
from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from . import device as device_mod
from .checks import CheckFailed, stderr_to_stdout
from .inputs import Case, make_qkv
from .integrity import watch_call

if TYPE_CHECKING:  # types only: counting needs the interpreter, imported where it runs
    from .counted_cost import Counts, Price

# (largest ratio, share of the points), tried in order; slower than the last edge earns nothing.
BANDS = ((1.3, 1.0), (1.6, 0.5))
# Student and reference outputs must agree within twice the dtype's tolerance (each is within
# one tolerance of the float64 truth: autograder.checks.TOLERANCES).
OUTPUT_ATOL = {torch.float16: 4e-3, torch.bfloat16: 3.2e-2, torch.float32: 2e-4}


@dataclass(frozen=True)
class TimingPlan:
    """What to time: one shape on a GPU, a small one under the interpreter (where a call of the
    GPU shape would take minutes), both in float16 (which every GPU Triton supports has). Under
    the interpreter the grade counts one call of each kernel on `cpu_case` (counted cost); the
    rounds there are for `time_against_reference`, which the grade no longer uses on a CPU."""
    # An attention inputs.Case; a case of another kind (problem 2b's rows of logits) has a seed and
    # label(), and the plan's make_inputs makes its arguments.
    gpu_case: Case | Any
    cpu_case: Case | Any
    gpu_rounds: int = 5
    cpu_rounds: int = 9
    input_sets: int = 3
    # What the timed function is called with: (case, device) -> (args, kwargs). None: (q, k, v) and
    # the case's call kwargs. Problem 2b passes its logits; a backward problem (q, k, v, do) and `causal`.
    make_inputs: Callable | None = None
    # How far the first output may be from the reference kernel's at the timed shape, per dtype
    # (None: OUTPUT_ATOL, twice the forward's tolerance).
    output_atol: dict | None = None

    def case(self, runtime) -> Case:
        return self.cpu_case if runtime.interpreter else self.gpu_case

    def rounds(self, runtime) -> int:
        return self.cpu_rounds if runtime.interpreter else self.gpu_rounds


@dataclass(frozen=True)
class Timing:
    ratio: float            # student time / reference time (median over rounds)
    student_ms: float       # median over rounds
    reference_ms: float
    round_ratios: tuple
    case: Case | Any
    device: str
    interpreter: bool

    def lines(self) -> list[str]:
        return [f"Timed on {self.device}, {self.case.label()}:",
                f"  your kernel {self.student_ms:9.3f} ms   reference kernel {self.reference_ms:9.3f} ms   "
                f"ratio {self.ratio:.2f} (rounds: {', '.join(f'{r:.2f}' for r in self.round_ratios)})"]


def band_share(ratio: float) -> float:
    """The share of the performance points a time ratio earns (see BANDS)."""
    for edge, share in BANDS:
        if ratio <= edge:
            return share
    return 0.0


def describe_bands() -> str:
    edges = [f"ratio <= {edge:g}: {share:.0%}" for edge, share in BANDS]
    return "; ".join(edges) + "; slower: 0%"


@contextlib.contextmanager
def exclusive_timing(runtime):
    """Hold the lock of this device while timing: tasks sharing a GPU take turns to be timed."""
    from filelock import FileLock  # a dependency of torch

    if runtime.interpreter:
        name = "cpu"
    else:
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        name = str(getattr(props, "uuid", torch.cuda.current_device()))
    path = os.path.join(tempfile.gettempdir(), f"autograder-timing-{name}.lock")
    # The grader's judge runs beside the notebook of the same submission; it times only once that
    # notebook is done (the grader creates this file then), so the two never share the device.
    gate = os.environ.get("COURSE_TIMING_GATE")
    while gate and not os.path.exists(gate):
        time.sleep(0.2)
    with FileLock(path):
        yield


def _timer(runtime):
    """Milliseconds per call of a no-argument function: do_bench's median on a GPU; under the
    interpreter (where a call takes 50-200 ms) the CPU time of one call, in this thread only, so
    that time spent descheduled by other grading tasks does not count."""
    if not runtime.interpreter:
        import triton

        return lambda call: triton.testing.do_bench(call, warmup=25, rep=100, return_mode="median")

    def one_call(call):
        start = time.thread_time()
        call()
        return (time.thread_time() - start) * 1e3
    return one_call


def _cycling(fn, input_sets):
    """A no-argument call that gives fn the next input set each time."""
    state = {"i": 0}

    def call():
        args, kwargs = input_sets[state["i"] % len(input_sets)]
        state["i"] += 1
        return fn(*args, **kwargs)
    return call


def _timing(fn, input_sets, runtime):
    """A no-argument function giving the milliseconds of one timing of fn on the input sets. A
    function that runs in a candidate process (the grader's judge) is timed there."""
    if hasattr(fn, "remote_timer"):
        return fn.remote_timer(input_sets, runtime)
    timer, call = _timer(runtime), _cycling(fn, input_sets)
    return lambda: timer(call)


def _first_output(result):
    return result[0] if isinstance(result, (tuple, list)) else result


def check_timed_outputs(fn, reference, input_sets, runtime, output_atol=None) -> None:
    """The student's kernel must compute the timed inputs with a Triton kernel and agree with the
    reference there: speed earns nothing for a wrong or borrowed answer."""
    args, kwargs = input_sets[0]
    with watch_call(args) as watched:
        got = _first_output(fn(*args, **kwargs))
        if runtime.device == "cuda":
            torch.cuda.synchronize()
    if watched.forbidden_ops or watched.triton_launches == 0:
        calls = f" (it calls {', '.join(watched.forbidden_ops)})" if watched.forbidden_ops else ""
        raise CheckFailed("no performance points: at the timed shape the result does not come from a Triton "
                          "kernel" + calls)
    _require_agreement(got, _first_output(reference(*args, **kwargs)), output_atol)


def _require_agreement(got, want, output_atol=None) -> None:
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        raise CheckFailed("no performance points: at the timed shape the output has the wrong type or shape")
    atol = (output_atol or OUTPUT_ATOL)[want.dtype]
    err = (got.float() - want.float()).abs().nan_to_num(float("inf")).max().item()
    if err > atol:
        raise CheckFailed(f"no performance points: at the timed shape the output differs from the reference "
                          f"kernel's by {err:.2g} (> {atol:g})")


def plan_inputs(plan: TimingPlan, case, device) -> tuple:
    """(args, kwargs) of one timed or counted call on `case`: the plan's own, else (q, k, v)."""
    if plan.make_inputs is not None:
        return plan.make_inputs(case, device)
    return make_qkv(case, device=device), case.call_kwargs


def time_against_reference(fn, reference, plan: TimingPlan, runtime=None) -> Timing:
    """Time fn and the reference in alternating rounds on the plan's inputs (see module doc)."""
    runtime = runtime or device_mod.current()
    case = plan.case(runtime)
    input_sets = [plan_inputs(plan, replace(case, seed=case.seed + i), runtime.device) for i in range(plan.input_sets)]
    check_timed_outputs(fn, reference, input_sets, runtime, plan.output_atol)
    student, ref = _timing(fn, input_sets, runtime), _timing(reference, input_sets, runtime)
    student(), ref()  # compile both, outside the clock
    pairs = []
    with exclusive_timing(runtime):
        for r in range(plan.rounds(runtime)):
            if r % 2 == 0:
                s, t = student(), ref()
            else:
                t, s = ref(), student()
            pairs.append((s, t))
    ratios = tuple(s / t for s, t in pairs)
    where = "the Triton interpreter (CPU)" if runtime.interpreter else torch.cuda.get_device_name(0)
    return Timing(statistics.median(ratios), statistics.median(s for s, _ in pairs),
                  statistics.median(t for _, t in pairs), ratios, case, where, runtime.interpreter)


@dataclass(frozen=True)
class CountedCost:
    """Both kernels' counts on the same inputs, priced on an H200 (autograder.counted_cost)."""
    ratio: float            # student cost / reference cost
    student: Price
    reference: Price
    student_counts: Counts
    reference_counts: Counts
    case: Case
    device: str = "the Triton interpreter (CPU), priced at an H200's peak rates"
    interpreter: bool = True

    def lines(self) -> list[str]:
        def work(c):
            dots = ", ".join(f"{kind} {flops / 1e6:.1f}" for kind, flops in c.dot_flops.items() if flops) or "none"
            return (f"dot MFLOPs {dots}; exponentials {c.exp}; other special functions {c.sfu_other}; "
                    f"bytes {c.memory_bytes} distinct ({c.bytes_loaded + c.bytes_stored} by all loads and stores)")
        return [f"Counted on {self.device}, {self.case.label()}:",
                f"  your kernel      {self.student.describe()}", f"    {work(self.student_counts)}",
                f"  reference kernel {self.reference.describe()}", f"    {work(self.reference_counts)}",
                f"  ratio {self.ratio:.2f}"]


def _counted_call(fn, args, kwargs):
    """(result, Counts) of one call of fn: counted in its candidate process when fn runs in one
    (the grader's judge), else here."""
    if hasattr(fn, "remote_count"):
        return fn.remote_count(*args, **kwargs)
    from .counted_cost import counting

    with counting() as counts:
        result = fn(*args, **kwargs)
    return result, counts


def count_against_reference(fn, reference, plan: TimingPlan, runtime=None) -> CountedCost:
    """The counted cost of fn over the reference kernel's on the plan's CPU case (module doc)."""
    from .counted_cost import price

    runtime = runtime or device_mod.current()
    if not runtime.interpreter:
        raise RuntimeError("counting needs the Triton interpreter; on a GPU kernels are timed")
    case = plan.cpu_case
    args, kwargs = plan_inputs(plan, case, runtime.device)
    check_timed_outputs(fn, reference, [(args, kwargs)], runtime, plan.output_atol)
    got, student_counts = _counted_call(fn, args, kwargs)
    want, reference_counts = _counted_call(reference, args, kwargs)
    # The counted call must be the graded computation: the same answer, from interpreted programs.
    _require_agreement(_first_output(got), _first_output(want), plan.output_atol)
    if student_counts.programs == 0:
        raise CheckFailed("no performance points: at the counted shape no Triton program ran")
    student, ref = price(student_counts), price(reference_counts)
    return CountedCost(student.seconds / ref.seconds, student, ref, student_counts, reference_counts, case)


def measure_against_reference(fn, reference, plan: TimingPlan, runtime=None):
    """On a GPU the timing (time_against_reference); under the interpreter the counted cost."""
    runtime = runtime or device_mod.current()
    if runtime.interpreter:
        return count_against_reference(fn, reference, plan, runtime)
    return time_against_reference(fn, reference, plan, runtime)


def award(fn, reference, plan: TimingPlan, points: float, gate=None) -> float | None:
    """Performance points for fn: `gate()` (the problem's own correctness check) first, then the
    timing against the reference kernel. Returns the points, for nbgrader's partial credit.

    Where the reference kernel is not at hand (a learner's install without solutions/), says so
    and returns None, unless grading, where a missing reference is the course's fault and raises.
    """
    if reference is None:
        if os.environ.get("COURSE_GRADING") == "1":
            # The notebook runs in the sandbox, which holds no reference kernel: the grader's judge
            # times both kernels outside it, and its points are the grade.
            print("Performance points are measured by the grader, outside this notebook.")
            return 0.0
        print("The reference kernel is not available here: performance points are measured when your "
              "notebook is graded.")
        return None
    with stderr_to_stdout():
        if gate is not None:
            try:
                gate()
            except CheckFailed as exc:
                raise CheckFailed(f"no performance points until the self-check passes: {exc.message}") from None
        measured = measure_against_reference(fn, reference, plan)
        share = band_share(measured.ratio)
        print("\n".join(measured.lines()))
        print(f"Bands: {describe_bands()}. Your kernel earns {share:.0%} of {points:g} points.")
        if measured.interpreter:
            print("(Without a GPU the ratio compares what the two kernels ask of a GPU: tensor-core work by "
                  "operand type, exponentials and memory traffic, counted and priced with an H200's peak rates.)")
    return points * share


def points_function(assignment: str, plan: TimingPlan, points: float, gate, *, reference):
    """A problem's `performance_points(fn)`: what its graded performance cell calls.

    `reference(assignment)` gives the reference kernel's function (or None where it is not at hand;
    autograder.problems.reference_function). It is asked at every call, not once here, since the
    grader's judge puts its own reference in place after the problem's module is imported.
    """
    def performance_points(fn):
        """The performance points fn earns against the reference kernel (printed, and returned
        for nbgrader's partial credit); a kernel that fails the self-check earns none."""
        return award(fn, reference(assignment), plan, points, gate=lambda: gate(fn))
    return performance_points
