"""Run a candidate attention function on test cases and say, in one line each, what is wrong.

Tolerances (|out - ref| <= atol + rtol * |ref|, against a float64 reference computed from
the same 16-bit inputs). A correct kernel rounds p to the 16-bit dtype before p @ V and
rounds the output once; with unit roundoff u (fp16 2**-11, bf16 2**-8) and |V| <= ~5 for
N(0, 1) data, its error stays within a few u. We allow 4u; measured errors of the
reference kernel sit at about 1u (docs/gpu-results.md). The seed's atol = rtol = 5e-2
was 100x (fp16) and 3x (bf16) looser. The log-sum-exp is computed in float32 from exact
16-bit products, so its tolerance is set by float32 sums and exp2, not by the input dtype.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import warnings
from dataclasses import dataclass, replace

import torch

from . import device as device_mod
from .diagnose import (
    GRAD_LABELS,
    describe_exception,
    diagnose_grad,
    diagnose_lse,
    diagnose_output,
    grad_pattern,
    locate,
    lse_right_output_wrong,
)
from .inputs import Case, make_grad, make_qkv
from .integrity import mutated, snapshot, watch_call
from .recorded import NotRecorded
from .references import attention_grads_reference, attention_reference
from .verdict import CaseVerdict, Finding, report


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


TOLERANCES = {
    torch.float16: Tolerance(atol=2e-3, rtol=2e-3),    # 4 * 2**-11
    torch.bfloat16: Tolerance(atol=1.6e-2, rtol=1.6e-2),  # 4 * 2**-8
    torch.float32: Tolerance(atol=1e-4, rtol=1e-4),     # PyTorch exercises in float32: sums of L terms
}
LSE_TOLERANCE = Tolerance(atol=1e-3, rtol=1e-4)
DEFAULT_TIMEOUT_S = float(os.environ.get("COURSE_CASE_TIMEOUT_S", 300))
# Wrong cases per run that look for a likely cause (run_cases): the rest are reported without one.
DIAGNOSED_FAILURES = 3


class CheckFailed(AssertionError):
    """A failed check. IPython shows only the verdict, not a traceback into the grader.
    `verdicts`: the case verdicts of the check that failed."""

    def __init__(self, message: str, verdicts=()):
        super().__init__(message)
        self.message = message
        self.verdicts = list(verdicts)

    def _render_traceback_(self):
        return [f"CheckFailed: {self.message}"]


@contextlib.contextmanager
def stderr_to_stdout():
    """Send everything written to stderr (Python and C level) to stdout while checks run.

    nbgrader gives zero points to a test cell with any stderr output, and Triton and
    torch warn on stderr; the text still shows, it just cannot cost points.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fd = None
    try:
        saved_fd = os.dup(2)
        os.dup2(1, 2)
    except OSError:
        saved_fd = None
    try:
        with contextlib.redirect_stderr(sys.stdout), warnings.catch_warnings():
            warnings.simplefilter("default")  # each warning once per place, not once per block
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: print(
                f"warning: {category.__name__}: {message}", file=sys.stdout)
            yield
    finally:
        sys.stdout.flush()
        if saved_fd is not None:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise TimeoutError in the calling thread after `seconds` (Unix main thread only)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"did not return within {seconds:g} s (an endless loop?)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def guarded_call(fn, args, kwargs, inputs, names, *, what: str, kernels: str = "kernel", device="cpu",
                 timeout_s: float = DEFAULT_TIMEOUT_S, require_triton: bool = True, quiet=()):
    """Call fn(*args, **kwargs) within the time limit, watching `inputs` (called `names`), and judge
    the call itself, as every check does before it looks at what came back.

    Returns (result, watched, None), or (None, None, (summary, findings)) when the call already
    fails the case: it raised; with `require_triton`, it calls a PyTorch op that computes the
    answer, or launches no Triton kernel (the advice: compute `what` in your Triton `kernels`);
    without, it calls PyTorch's attention; it wrote into one of its inputs. `quiet`: messages of
    RuntimeWarnings that the call may raise rightly (the interpreter's numpy at 0 / 0).
    """
    before = snapshot(inputs)
    try:
        with time_limit(timeout_s), watch_call(inputs) as watched, warnings.catch_warnings():
            for message in quiet:
                warnings.filterwarnings("ignore", message, RuntimeWarning)
            result = fn(*args, **kwargs)
            if device == "cuda":
                torch.cuda.synchronize()
    except Exception as exc:  # student code may raise anything; the verdict must not crash
        return None, None, ("the call did not return", [describe_exception(exc)])
    if require_triton and watched.forbidden_ops:
        return None, None, ("not computed by a Triton kernel", [Finding(
            "no_kernel", "it calls PyTorch's " + ", ".join(watched.forbidden_ops)
            + f"; the exercise is to compute {what} in your Triton {kernels}")])
    if not require_triton and watched.attention_ops:
        return None, None, ("not computed by your code", [Finding(
            "uses_builtin_attention", "it calls PyTorch's " + ", ".join(watched.attention_ops)
            + f"; the exercise is to write {what} yourself")])
    if require_triton and watched.triton_launches == 0:
        return None, None, ("not computed by a Triton kernel", [Finding(
            "no_kernel", f"no Triton kernel was launched; the exercise is to compute {what} in your {kernels}")])
    changed = mutated(before, inputs)
    if changed:
        wrote = "it wrote into " + ", ".join(names[i] for i in changed)
        if len(inputs) == 1:
            return None, None, ("input modified", [Finding("mutated_inputs", wrote + "; the input is read-only")])
        return None, None, ("inputs modified", [Finding("mutated_inputs", wrote + "; inputs are read-only")])
    return result, watched, None


def _unpack(result, q, check_lse):
    """Return (o, lse, problem) from what the candidate returned."""
    if isinstance(result, torch.Tensor):
        return None, None, "returned one tensor; the function must return (o, lse)"
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return None, None, f"returned {type(result).__name__}; the function must return (o, lse)"
    o, lse = result
    if not isinstance(o, torch.Tensor) or not isinstance(lse, torch.Tensor):
        return None, None, "(o, lse) must both be tensors"
    if o.shape != q.shape:
        return None, None, f"o has shape {tuple(o.shape)}, expected {tuple(q.shape)}"
    if o.dtype != q.dtype:
        return None, None, f"o has dtype {o.dtype}, expected {q.dtype} (the input dtype)"
    if check_lse and lse.shape != q.shape[:-1]:
        return None, None, f"lse has shape {tuple(lse.shape)}, expected {tuple(q.shape[:-1])}"
    return o, lse, None


def second_call_case(case: Case) -> Case:
    """The case of the second call that catches a cached answer: other inputs of the same shape."""
    return replace(case, seed=case.seed + 7919)


def _returns_cached_output(fn, case: Case, runtime, first_o, first_inputs) -> Finding | None:
    """Call again on different inputs of the same shape: a fresh answer must come back.

    Returning a stored answer is an accusation, so it is made only when it is certain: the second
    output is bit for bit the first, the first was right for its own inputs, and it is not what an
    input-independent bug gives (NaN, inf, zeros, one constant everywhere). Anything else is a
    wrong output like any other, and the checks that follow diagnose it.
    """
    q, k, v = make_qkv(second_call_case(case), device=runtime.device)
    try:
        with time_limit(DEFAULT_TIMEOUT_S):
            o2 = fn(q, k, v, **case.call_kwargs)[0]
    except Exception as exc:  # the first call worked; say plainly that the second did not
        return Finding("raised", "a second call on other inputs failed: " + describe_exception(exc).message)
    if not isinstance(o2, torch.Tensor) or o2.shape != first_o.shape:
        return None
    same_tensor = o2.data_ptr() == first_o.data_ptr()
    if not (same_tensor or torch.equal(o2, first_o)) or not bool(torch.isfinite(first_o).all()):
        return None
    if first_o.numel() == 0 or bool((first_o == first_o.flatten()[0]).all()):
        return None  # zeros or one constant: a bug that ignores its inputs, not a stored answer
    tol = TOLERANCES[first_o.dtype]
    try:
        ref2, _ = attention_reference(q, k, v, **case.mask_kwargs)
    except NotRecorded:  # (the student edition records it for the cases its notebooks check first)
        return None
    if bool(torch.isclose(o2.detach().double().to(ref2.device), ref2, atol=tol.atol, rtol=tol.rtol).all()):
        if same_tensor:  # the first answer was overwritten by the second
            return Finding("shared_output", "a second call returned the same tensor as the first, overwritten: "
                                            "allocate a new output on every call")
        return None  # right for both inputs (inputs that differ too little to tell)
    ref_o, _ = attention_reference(*first_inputs, **case.mask_kwargs)
    if not bool(torch.isclose(first_o.detach().double().to(ref_o.device), ref_o, atol=tol.atol, rtol=tol.rtol).all()):
        return None  # the first answer was already wrong: diagnose that
    return Finding("cached_output", "it returned the same output for different inputs (a cached result)")


def _first_findings(diagnoses, args, generic) -> list:
    """The findings of the first of a problem's own diagnoses that names something, else the
    generic patterns' (`generic()`)."""
    for diagnose in diagnoses:
        findings = unless_unrecorded(diagnose, *args)
        if findings:
            return findings
    return unless_unrecorded(generic)


def unless_unrecorded(diagnose, *args) -> list[Finding]:
    """A diagnosis's findings; none where it needs a re-enactment the student edition did not record."""
    try:
        return diagnose(*args)
    except NotRecorded:
        return []


def run_case(fn, case: Case, runtime=None, check_output=True, check_lse=True,
             timeout_s: float = DEFAULT_TIMEOUT_S, fresh_call: bool = False, require_triton: bool = True,
             extra_checks=(), diagnoses=(), lse_diagnoses=(), diagnose: bool = True) -> CaseVerdict:
    """Call fn(q, k, v, **case.call_kwargs) on fresh inputs for `case` and compare with the
    float64 reference for the case's mask (causal, window, sink) and heads (GQA).

    With `fresh_call`, also call it on other inputs of the same shape to catch a cached answer.
    `require_triton`: the answer must come from a Triton kernel, not from PyTorch ops.
    `extra_checks`: callables (watch, q, k, v, case) -> Finding or None, run after the call
    (e.g. "K/V were repeated in memory"). `diagnoses`: callables (o64, q, k, v, ref_o, case)
    -> list of Findings for a wrong output, tried before the generic patterns; `lse_diagnoses`:
    callables (lse64, q, k, v, ref_lse, case) -> list of Findings for a wrong log-sum-exp, likewise.
    `diagnose=False`: a wrong output or LSE gets no likely cause (none of those is tried).
    """
    runtime = runtime or device_mod.current()
    note = ""
    # Only Triton kernels need the conversion (bf16 tl.dot is wrong in the interpreter);
    # PyTorch exercises run in the dtype the case asks for, float32 included.
    if require_triton and case.torch_dtype not in runtime.dtypes:
        note = (f"{case.dtype} ran as {str(runtime.default_dtype).replace('torch.', '')}: "
                f"{case.dtype} tl.dot is unreliable on the {'CPU interpreter' if runtime.interpreter else 'GPU'}")
        case = case.with_dtype(str(runtime.default_dtype).replace("torch.", ""))
    q, k, v = make_qkv(case, device=runtime.device)

    def fail(summary, findings=(), **figures):
        return CaseVerdict(case.label(), False, summary, list(findings), note, case=case, **figures)

    result, watched, failed = guarded_call(fn, (q, k, v), case.call_kwargs, (q, k, v), "qkv", what="attention",
                                           device=runtime.device, timeout_s=timeout_s, require_triton=require_triton)
    if failed:
        return fail(*failed)
    o, lse, problem = _unpack(result, q, check_lse)
    if problem:
        return fail("wrong return value", [Finding("bad_return", problem)])
    if any(o.data_ptr() == t.data_ptr() for t in (q, k, v)):
        return fail("wrong return value", [Finding("bad_return", "it returned one of its inputs as the output")])
    if fresh_call:
        cached = _returns_cached_output(fn, case, runtime, o, (q, k, v))
        if cached:
            return fail("wrong return value" if cached.code != "raised" else "the second call did not return",
                        [cached])

    for extra in extra_checks:
        finding = extra(watched, q, k, v, case)
        if finding:
            return fail(finding.message.split(":")[0][:60], [finding])

    try:
        ref_o, ref_lse = attention_reference(q, k, v, **case.mask_kwargs)
    except NotRecorded as exc:  # the student edition knows the reference on the visible cases only
        return fail("no reference output for this case", [Finding("not_recorded", str(exc))])
    tol = TOLERANCES[q.dtype]
    o64 = o.detach().double().to(ref_o.device)
    if check_output:
        bad = ~torch.isclose(o64, ref_o, atol=tol.atol, rtol=tol.rtol)
        if bad.any():
            err = (o64 - ref_o).abs().nan_to_num(float("inf")).max().item()
            findings = _first_findings(diagnoses, (o64, q, k, v, ref_o, case),
                                       lambda: diagnose_output(o64, q, k, v, ref_o, tol.atol, tol.rtol, case)) \
                if diagnose else []
            findings = _explain_non_finite(findings, fn, (q, k, v), case, runtime)
            if diagnose and not findings and check_lse and _lse_right(lse, ref_lse):
                findings = [lse_right_output_wrong()]
            where = locate(bad)
            return fail(f"output: max|err| {err:.2g} > tol {tol.atol:g} ({where})", findings,
                        max_error=err, tolerance=tol.atol, where=where)
    figures = {}
    if check_output:
        figures = {"max_error": (o64 - ref_o).abs().max().item(), "tolerance": tol.atol}
    summary = f"max|err| {figures['max_error']:.1e} (tol {tol.atol:g})" if check_output else ""
    if check_lse:
        lse64 = lse.detach().double().to(ref_lse.device)
        bad = ~torch.isclose(lse64, ref_lse, atol=LSE_TOLERANCE.atol, rtol=LSE_TOLERANCE.rtol)
        if bad.any():
            err = (lse64 - ref_lse).abs().nan_to_num(float("inf")).max().item()
            findings = _first_findings(lse_diagnoses, (lse64, q, k, v, ref_lse, case),
                                       lambda: diagnose_lse(lse64, ref_lse, q, k, LSE_TOLERANCE.atol, case)) \
                if diagnose else []
            findings = _explain_non_finite(findings, fn, (q, k, v), case, runtime)
            return fail(f"lse: max|err| {err:.2g} > tol {LSE_TOLERANCE.atol:g}", findings,
                        max_error=err, tolerance=LSE_TOLERANCE.atol)
        lse_err = (lse64 - ref_lse).abs().max().item()
        summary = (summary + "; " if summary else "") + f"lse max|err| {lse_err:.1e}"
        figures = figures or {"max_error": lse_err, "tolerance": LSE_TOLERANCE.atol}
    return CaseVerdict(case.label(), True, summary, [], note, case=case, **figures)


NON_FINITE_CODES = ("all_nan", "some_nan", "lse_nan", "grad_nan")


def _explain_non_finite(findings, fn, inputs, case, runtime, kwargs=None) -> list:
    """A NaN or inf finding says where the first one came from: the kernel is run again, under the
    interpreter, with its arithmetic watched (nan_trace). On a GPU, or when the re-run explains
    nothing, the findings stay as they are."""
    if not runtime.interpreter or not any(f.code in NON_FINITE_CODES for f in findings):
        return findings
    from . import nan_trace

    try:
        with nan_trace.watch() as trace:
            fn(*inputs, **(case.call_kwargs if kwargs is None else kwargs))
        origin = trace.explain()
    except Exception:  # the explanation is extra: a kernel that fails the second time keeps its finding
        return findings
    if not origin:
        return findings
    return [replace(f, message=f"{f.message.split(':')[0]}: {origin}") if f.code in NON_FINITE_CODES else f
            for f in findings]


def _lse_right(lse, ref_lse) -> bool:
    lse64 = lse.detach().double().to(ref_lse.device)
    return bool(torch.isclose(lse64, ref_lse, atol=LSE_TOLERANCE.atol, rtol=LSE_TOLERANCE.rtol).all())


def run_cases(fn, cases, title="", **kwargs) -> list[CaseVerdict]:
    """Run and report every case (one line each, plus likely causes when wrong). Only the first
    DIAGNOSED_FAILURES wrong cases of a run look for a likely cause: the float64 re-enactments
    behind a cause cost more CPU than the case itself, and a wrong kernel fails many cases."""
    runtime = kwargs.pop("runtime", None) or device_mod.current()
    results: list[CaseVerdict] = []
    with stderr_to_stdout():
        if title:
            print(title)
        for i, case in enumerate(cases):
            wrong = sum(not r.passed for r in results)
            # The first case of each run is also called on other inputs, to catch a cached answer.
            result = run_case(fn, case, runtime=runtime, fresh_call=(i == 0),
                              diagnose=wrong < DIAGNOSED_FAILURES, **kwargs)
            if not result.passed and wrong >= DIAGNOSED_FAILURES and not result.findings:
                result.note = (result.note + "; " if result.note else "") + \
                    f"likely cause not sought: the first {DIAGNOSED_FAILURES} wrong cases were diagnosed"
            results.append(report(result))
    return results


def assert_cases(fn, cases, title="", **kwargs) -> None:
    """Like run_cases, then raise CheckFailed (zero points in nbgrader) if any case failed."""
    conclude(run_cases(fn, cases, title=title, **kwargs))


def conclude(results: list[CaseVerdict]) -> None:
    """Raise CheckFailed naming the first failed case and its likely cause, or say all passed."""
    failed = [r for r in results if not r.passed]
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(results)} cases failed; first: {failed[0].label}: {failed[0].reason}",
                          results)
    print(f"All {len(results)} cases passed.")


# --- gradients: the backward problems ------------------------------------------------------------------
#
# A backward kernel's dQ, dK and dV against float64 autograd of the reference attention, on the
# same 16-bit inputs and upstream gradient. The backward rounds more than the forward: P and dS are
# rounded to the input dtype before four matmuls (not one), and dQ and dK sum L terms each. The
# tolerances below are 16 units of roundoff u of the input dtype (absolute and relative). Measured
# (scripts/backward_tolerances.py, docs/backward-tolerances.md) as the smallest atol = rtol that
# passes: the reference kernels at most 2.0 u in float16; their arithmetic emulated with the same
# rounding, up to L = 2048 and D = 16-128, causal or not, at most 1.8 u (float16), 2.1 u (bfloat16)
# and 3.7 u (float32 through TF32, which a GPU's tl.dot uses for float32: 10 mantissa bits,
# float16's u). So 16 u leaves a margin of 4-8x, and every named mistake errs by 100 u or more.
GRAD_TOLERANCES = {
    torch.float16: Tolerance(atol=8e-3, rtol=8e-3),     # 16 * 2**-11
    torch.bfloat16: Tolerance(atol=6.4e-2, rtol=6.4e-2),  # 16 * 2**-8
    torch.float32: Tolerance(atol=8e-3, rtol=8e-3),     # TF32 on a GPU: float16's unit roundoff
}
GRAD_NAMES = ("dq", "dk", "dv")


def grad_close(got: torch.Tensor, ref: torch.Tensor, tol: Tolerance) -> torch.Tensor:
    """Where a gradient is right: |got - ref| <= atol + rtol * (the largest |ref| in its row).

    A row (one token's gradient) comes out of one accumulation over many blocks, and its rounding
    error scales with the terms summed, which the row's largest entry tracks; a single entry can
    cancel to near zero while its error does not. Measured: a sink key's dV under a window of 1
    sums P ~ 0.5 times dO over all 1500 queries of a float16 case; the reference kernel, rounding P
    to float16 before the dot as every FlashAttention-2 does, is 0.0094 off in an entry of size
    0.099 of a row whose largest entry is 75, on the H200 and under the interpreter alike
    (docs/backward-tolerances.md). NaN and inf are never close.
    """
    scale = ref.abs().amax(dim=-1, keepdim=True)
    return (got - ref).abs() <= tol.atol + tol.rtol * scale


def grad_call_kwargs(case: Case) -> dict:
    """What a backward function under test is called with besides (q, k, v, do): `causal`, and the
    window/sink arguments when the case sets them."""
    return {"causal": case.is_causal, **case.call_kwargs}


def _unpack_grads(result, tensors):
    """Return (dict of dq, dk, dv, problem) from what a backward function returned."""
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        return None, f"returned {type(result).__name__}; the function must return (dq, dk, dv)"
    grads = dict(zip(GRAD_NAMES, result, strict=True))
    for (name, g), like in zip(grads.items(), tensors, strict=True):
        label = GRAD_LABELS[name]
        if not isinstance(g, torch.Tensor):
            return None, f"{label} is {type(g).__name__}, not a tensor"
        if g.shape != like.shape:
            return None, f"{label} has shape {tuple(g.shape)}, expected {tuple(like.shape)}"
        if g.dtype != like.dtype:
            return None, f"{label} has dtype {g.dtype}, expected {like.dtype} (the input dtype)"
    return grads, None


def run_grad_case(fn, case: Case, runtime=None, timeout_s: float = DEFAULT_TIMEOUT_S, require_triton: bool = True,
                  extra_checks=(), diagnoses=(), call_kwargs=grad_call_kwargs) -> CaseVerdict:
    """Call fn(q, k, v, do, **call_kwargs(case)) on fresh inputs for `case` and compare the
    (dq, dk, dv) it returns with float64 autograd of the reference attention.

    The verdict says which gradients are wrong, where each first goes wrong (batch, head, row:
    a query for dQ, a key for dK and dV) and a likely cause. `diagnoses`: callables
    (got, q, k, v, do, ref, case) -> list of Findings, with `got` and `ref` dicts of float64
    gradients, tried before the generic patterns; `extra_checks` as in run_case.
    """
    runtime = runtime or device_mod.current()
    note = ""
    if require_triton and case.torch_dtype not in runtime.dtypes and case.torch_dtype != torch.float32:
        note = (f"{case.dtype} ran as {str(runtime.default_dtype).replace('torch.', '')}: "
                f"{case.dtype} tl.dot is unreliable on the {'CPU interpreter' if runtime.interpreter else 'GPU'}")
        case = case.with_dtype(str(runtime.default_dtype).replace("torch.", ""))
    q, k, v = make_qkv(case, device=runtime.device)
    do = make_grad(case, device=runtime.device)

    def fail(summary, findings=(), **figures):
        return CaseVerdict(case.label(), False, summary, list(findings), note, case=case, width=48, **figures)

    result, watched, failed = guarded_call(fn, (q, k, v, do), call_kwargs(case), (q, k, v, do), ("q", "k", "v", "do"),
                                           what="the gradients", kernels="kernels", device=runtime.device,
                                           timeout_s=timeout_s, require_triton=require_triton)
    if failed:
        return fail(*failed)
    grads, problem = _unpack_grads(result, (q, k, v))
    if problem:
        return fail("wrong return value", [Finding("bad_return", problem)])
    for extra in extra_checks:
        finding = extra(watched, q, k, v, case)
        if finding:
            return fail(finding.message.split(":")[0][:60], [finding])

    try:
        ref = dict(zip(GRAD_NAMES, attention_grads_reference(q, k, v, do, **case.mask_kwargs), strict=True))
    except NotRecorded as exc:  # the student edition knows the reference on the visible cases only
        return fail("no reference gradients for this case", [Finding("not_recorded", str(exc))])
    got = {name: g.detach().double().to(ref[name].device) for name, g in grads.items()}
    tol = GRAD_TOLERANCES[q.dtype]
    errors, wrong = {}, {}
    for name in GRAD_NAMES:
        bad = ~grad_close(got[name], ref[name], tol)
        errors[name] = (got[name] - ref[name]).abs().nan_to_num(float("inf")).max().item()
        if bad.any():
            wrong[name] = bad
    if not wrong:
        summary = ", ".join(f"{GRAD_LABELS[n]} {errors[n]:.1e}" for n in GRAD_NAMES) + f" (tol {tol.atol:g})"
        return CaseVerdict(case.label(), True, "max|err| " + summary, [], note, case=case, width=48,
                           max_error=max(errors.values()), tolerance=tol.atol)
    findings = []
    for diagnose in diagnoses:
        findings = unless_unrecorded(diagnose, got, q, k, v, do, ref, case)
        if findings:
            break
    if not findings:
        for name in wrong:
            findings += unless_unrecorded(diagnose_grad, name, got[name], ref[name], q, tol.atol, tol.rtol)
    if not findings:
        pattern = grad_pattern(wrong)
        findings = [pattern] if pattern else []
    findings = _explain_non_finite(findings, fn, (q, k, v, do), case, runtime, call_kwargs(case))
    right = [GRAD_LABELS[n] for n in GRAD_NAMES if n not in wrong]
    first = next(iter(wrong))
    where = f"{GRAD_LABELS[first]} " + locate(wrong[first]).replace(
        "row", "query" if first == "dq" else "key", 1)
    summary = "; ".join(f"{GRAD_LABELS[n]} max|err| {errors[n]:.2g} > tol {tol.atol:g}" for n in wrong)
    summary += (f" ({', '.join(right)} right)" if right else "") + f"; {where}"
    return fail(summary, findings, max_error=max(errors[n] for n in wrong), tolerance=tol.atol, where=where)


def run_each(run_one, fn, cases, title="", **kwargs) -> list[CaseVerdict]:
    """run_one(fn, case, **kwargs) for every case, each reported in one line (plus likely causes
    when wrong), with stderr sent to stdout while they run."""
    results = []
    with stderr_to_stdout():
        if title:
            print(title)
        for case in cases:
            results.append(report(run_one(fn, case, **kwargs)))
    return results


def check_visit_cases(visit_one, cases, title="", unit="blocks") -> None:
    """The block-visit check of a masked kernel (problems 6 and 8): for every case, run
    visit_one(case, runtime) -> (findings, summary), report one line, and raise CheckFailed naming
    the first wrong case. A case whose dtype the runtime cannot check runs in its default dtype;
    whatever the student's kernel raises becomes that case's finding."""
    runtime = device_mod.current()
    failures, verdicts = [], []
    with stderr_to_stdout():
        if title:
            print(title)
        for case in cases:
            if case.torch_dtype not in runtime.dtypes:
                case = case.with_dtype(str(runtime.default_dtype).replace("torch.", ""))
            try:
                findings, summary = visit_one(case, runtime)
            except Exception as exc:  # student code may raise anything; the verdict must not crash
                findings, summary = [describe_exception(exc)], "the kernel did not run"
            verdicts.append(report(CaseVerdict(case.label(), not findings, summary, findings, case=case)))
            if findings:
                failures.append((case.label(), findings[0].message))
    if failures:
        label, reason = failures[0]
        raise CheckFailed(f"{len(failures)} of {len(cases)} cases visit the wrong {unit}; first: {label}: {reason}",
                          verdicts)
    print(f"All {len(cases)} cases visit exactly the {unit} they need.")


def visits_reported(record: dict, rows: int) -> tuple[list, int, int]:
    """(per-program visit counts as `rows` lists, block_m, block_n) from a wrapper's `_visits` record."""
    if "counts" not in record:
        raise RuntimeError("the wrapper did not report its visits (call it with _visits=dict)")
    return record["counts"].cpu().reshape(rows, -1).tolist(), int(record["block_m"]), int(record["block_n"])


def visit_summary(counts, case: Case, block_m: int, block_n: int) -> str:
    total = sum(map(sum, counts))
    every = case.B * case.H * -(-case.L // block_m) * -(-case.L // block_n)
    return f"{total} tile visits ({block_m}x{block_n} tiles; all tiles: {every})"


def run_grad_cases(fn, cases, title="", **kwargs) -> list[CaseVerdict]:
    """Run and report every backward case (one line each, plus likely causes when wrong)."""
    runtime = kwargs.pop("runtime", None) or device_mod.current()
    return run_each(run_grad_case, fn, cases, title, runtime=runtime, **kwargs)


def assert_grad_cases(fn, cases, title="", **kwargs) -> None:
    """Like run_grad_cases, then raise CheckFailed if any case failed."""
    conclude(run_grad_cases(fn, cases, title=title, **kwargs))
