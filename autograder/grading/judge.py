"""The judge: decides a submission's points without ever running its code.

    python -m autograder.grading.judge SPEC.json RESULT.json

(verify.py does not start it so: it forks each judge from a judge server that has already imported
torch, judge_server.py; either way the judge is a fresh process that never ran student code.)

SPEC holds the kernel module (the released locked cells with the student's answer cell), the
graded test cells from the source notebook (hidden tests included), and, for the performance
points, the reference kernel module. The judge starts a candidate process in the sandbox
(candidate.py) holding the kernel module, and runs each test cell here, in its own interpreter,
with every function of the kernel module replaced by a `RemoteFunction`: calling it sends the
judge's inputs to the candidate and brings back what the student's code returned, as data. The
comparison with the float64 reference, the diagnosis and the points all happen here, where no
student code runs. The reference kernel is timed in a candidate of its own, so both kernels are
timed the same way.

RESULT gets {"verdicts": [verdict.TestVerdict.to_dict() per test], "error": ""}: per test "test",
"passed", "message" (why it failed), "score", "findings" (each likely cause the judge's checks named,
with its message) and "cases" (every case verdict those checks reported); "error" says why the
grader itself could not judge (then there are no verdicts, and no grade is given).
"""
from __future__ import annotations

import ast
import builtins
import json
import numbers
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .. import threads
from .candidate import EXCHANGE, MODULE_FILE
from .reference_cache import cached_reference
from .wire import Exchange, WireError

MAX_REPLY_BYTES = 64 << 20
STARTUP_TIMEOUT_S = 300          # importing torch and triton in a fresh process, on a busy machine
LOG_TAIL_BYTES = 4000


class RemoteError(Exception):
    """An exception the student's code raised in the candidate, rebuilt here as data."""


class JudgeFailure(BaseException):
    """The grader could not judge (the sandbox did not start, the environment is broken). A
    BaseException, so that no check's `except Exception` turns it into the student's mistake."""


class CandidateDied(RuntimeError):
    """The candidate process ended (a crash, os._exit, the sandbox killed it) or broke the protocol."""


def _exception_class(name: str):
    """A RemoteError subclass named like the original, also a subclass of the builtin of that name
    (TimeoutError, NotImplementedError, ...) so that the checks' diagnosis reads it as it would."""
    safe = name if name.isidentifier() else "RemoteError"
    base = getattr(builtins, safe, None)
    bases: tuple[type, ...] = (RemoteError,)
    if isinstance(base, type) and issubclass(base, Exception) and base is not Exception:
        bases = (RemoteError, base)
    return type(safe, bases, {})


def rebuild_exception(error: dict) -> BaseException:
    chain = error.get("chain") or [{"type": error.get("type", "Error"), "message": error.get("message", "")}]
    built = None
    for item in reversed(chain[:10]):
        exc = _exception_class(str(item.get("type", "Error")))(str(item.get("message", ""))[:4000])
        exc.__cause__ = built
        built = exc
    assert built is not None  # chain has at least one item
    if error.get("error_message"):
        built.error_message = str(error["error_message"])[:2000]  # Triton's CompilationError
    return built


class CandidateProcess:
    """One sandboxed candidate holding one module; restarted after a timeout or a crash."""

    def __init__(self, module_source: str, *, sandboxed: bool, gpu: bool, label: str = "candidate",
                 timeout_s: float = 600):
        self.source, self.sandboxed, self.gpu, self.label, self.timeout_s = (
            module_source, sandboxed, gpu, label, timeout_s)
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.restarts = 0
        self._stored: str | None = None  # the key of the input sets the candidate holds (remote_timer)

    # ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"judge-{self.label}-"))
        (self.workdir / EXCHANGE).mkdir()
        (self.workdir / MODULE_FILE).write_text(self.source)
        self.wire = Exchange(self.workdir / EXCHANGE, "j")
        argv = [sys.executable, "-m", "autograder.grading.candidate", str(self.workdir)]
        env = {k: os.environ[k] for k in ("TRITON_INTERPRET", "COURSE_CASE_TIMEOUT_S", "COURSE_GRADING",
                                          "CUDA_VISIBLE_DEVICES", *threads.VARIABLES) if k in os.environ}
        if self.sandboxed:
            from . import sandbox

            argv = sandbox.command(argv, scratch=self.workdir, gpu=self.gpu, env=env)
            popen_env = None
        else:
            popen_env = dict(os.environ, **env)
        self.log = open(self.workdir / "candidate.log", "w+b")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     env=popen_env, cwd=self.workdir, start_new_session=True)
        assert self.proc.stdout is not None  # stdout=PIPE
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)
        self.buffer = b""
        try:
            ready = json.loads(self._read_line(STARTUP_TIMEOUT_S))
        except (Exception, TimeoutError) as exc:
            tail = self._log_tail()
            self.stop()
            raise JudgeFailure(f"the {self.label} process did not start ({exc}); its log ends: {tail[-600:]}") from None
        if ready != {"ok": True, "ready": True}:
            self.stop()
            raise JudgeFailure(f"the {self.label} process did not start: unexpected greeting")

    def _log_tail(self) -> str:
        try:
            self.log.flush()
            self.log.seek(max(0, os.fstat(self.log.fileno()).st_size - LOG_TAIL_BYTES))
            return self.log.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None and self.workdir is not None  # stdin=PIPE; start() made both
        try:
            self.proc.stdin.write(b'{"op": "exit"}\n')
            self.proc.stdin.flush()
            self.proc.wait(timeout=5)
        except Exception:  # broken pipe, or it does not listen any more
            pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.selector.close()
        self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.proc = None

    def cpu_seconds(self) -> float:
        """CPU time of the candidate's whole process tree, read from the kernel: a number the
        candidate cannot forge."""
        import psutil

        assert self.proc is not None  # called while the candidate runs
        total = 0.0
        try:
            root = psutil.Process(self.proc.pid)
            for p in [root] + root.children(recursive=True):
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            pass
        return total

    # ------------------------------------------------------------------------------------------
    def _read_line(self, timeout_s: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None  # start() made it; stdout=PIPE
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"did not return within {timeout_s:g} s (an endless loop?)")
            if not self.selector.select(timeout=min(left, 1.0)):
                if self.proc.poll() is not None:
                    break
                continue
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                break
            self.buffer += chunk
            if len(self.buffer) > MAX_REPLY_BYTES:
                raise CandidateDied("the candidate's reply is larger than the judge accepts")
        if b"\n" not in self.buffer:
            code = self.proc.wait()
            tail = self._log_tail().splitlines()
            raise CandidateDied(f"the process running your code ended (exit code {code})"
                                + (f": {tail[-1][:300]}" if tail else ""))
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def request(self, message: dict, timeout_s: float | None = None) -> dict:
        """Send one request and return the reply; any failure restarts the candidate, so a
        request cut short (a time limit, a crash) never leaves a stale answer in the channel."""
        if self.proc is None:
            try:
                self.start()
            except JudgeFailure:
                raise
            except Exception as exc:  # bwrap missing, a bad path: the grader's problem
                raise JudgeFailure(f"the {self.label} process could not be started: "
                                   f"{type(exc).__name__}: {exc}") from None
        assert self.proc is not None and self.proc.stdin is not None  # start() made it; stdin=PIPE
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
            reply = json.loads(self._read_line(timeout_s or self.timeout_s))
            if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
                raise CandidateDied("the candidate answered something that is not a reply")
            return reply
        except BaseException as exc:
            self.restarts += 1
            self.stop()
            if isinstance(exc, (BrokenPipeError, ValueError)) and not isinstance(exc, WireError):
                raise CandidateDied(f"the process running your code stopped answering ({type(exc).__name__})") from None
            raise

    def call(self, target: str, args, kwargs, count: bool = False):
        """(result, watch record), plus the checked count of the call when `count` (the
        candidate counts under the interpreter; autograder.counted_cost)."""
        if self.proc is None:
            self.request({"op": "noop"})  # start it; the exchange belongs to this process
        message = {"op": "call", "target": target, "args": self.wire.encode(list(args)),
                   "kwargs": self.wire.encode(dict(kwargs))["v"], "count": count}
        reply = self.request(message)
        if not reply["ok"]:
            raise rebuild_exception(reply.get("error") or {})
        result = self.wire.decode(reply.get("result"))
        after, after_kw = reply.get("args") or [], reply.get("kwargs") or {}
        if (not isinstance(after, list) or len(after) > len(args) or not isinstance(after_kw, dict)
                or not set(after_kw) <= set(kwargs)):
            raise CandidateDied("malformed reply: argument list")
        import torch

        containers = reply.get("containers") or {}
        if not isinstance(containers, dict):
            raise CandidateDied("malformed reply: containers")
        for key, new in containers.items():
            target = args[int(key)] if key.isdigit() and int(key) < len(args) else kwargs.get(key)
            value = self.wire.decode(new)
            if isinstance(target, dict) and isinstance(value, dict):
                target.clear()
                target.update(value)
            elif isinstance(target, list) and isinstance(value, list):
                target[:] = value
        # zip stops at the shorter: a reply may list fewer arguments than the call (never more: checked above).
        pairs = list(zip(args, after, strict=False)) + [(kwargs[k], new) for k, new in after_kw.items()]
        for arg, new in pairs:
            if new is not None and isinstance(arg, torch.Tensor):
                value = self.wire.decode(new)
                if not isinstance(value, torch.Tensor) or value.shape != arg.shape or value.dtype != arg.dtype:
                    raise CandidateDied("malformed reply: a changed argument changed shape or dtype")
                arg.copy_(value.to(arg.device))
        if not count:
            return result, _checked_watch(reply.get("watch"))
        from ..counted_cost import Counts

        try:
            counts = Counts.from_dict(reply.get("counts"))
        except ValueError as exc:
            raise CandidateDied(f"malformed reply: counts ({exc})") from None
        return result, _checked_watch(reply.get("watch")), counts


def _checked_watch(watch) -> dict:
    if not isinstance(watch, dict):
        raise CandidateDied("malformed reply: no watch record")
    out = {"ops": watch.get("ops", []), "functions": watch.get("functions", []),
           "triton_launches": watch.get("triton_launches", 0), "largest_numel": watch.get("largest_numel", 0),
           "enlarged_copies": watch.get("enlarged_copies", [])}
    if not (all(isinstance(x, str) for x in out["ops"] + out["functions"])
            and isinstance(out["triton_launches"], int) and isinstance(out["largest_numel"], int)
            and all(isinstance(c, list) and len(c) == 2 and isinstance(c[0], str) and isinstance(c[1], int)
                    for c in out["enlarged_copies"])):
        raise CandidateDied("malformed reply: watch record")
    return out


class RemoteFunction:
    """Stands in, in the judge, for a function of the candidate's module."""

    def __init__(self, host: CandidateProcess, target: str):
        self._host, self._target = host, target

    def __repr__(self):
        return f"<{self._target} (in the candidate)>"

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return RemoteFunction(self._host, f"{self._target}.{name}")

    def __call__(self, *args, **kwargs):
        import torch
        from torch.utils._python_dispatch import _disable_current_modes

        from ..integrity import record_remote_watch

        # The judge's own watch must not count the copies that carry the call across (the candidate
        # watches the call itself and reports it).
        with _disable_current_modes(), torch._C.DisableTorchFunction():
            result, watch = self._host.call(self._target, args, kwargs)
        record_remote_watch(watch)
        return result

    def remote_count(self, *args, **kwargs):
        """(result, Counts) of one call, counted in the candidate under the interpreter; the
        count is checked here as data (counted_cost.Counts.from_dict)."""
        import torch
        from torch.utils._python_dispatch import _disable_current_modes

        from ..integrity import record_remote_watch

        with _disable_current_modes(), torch._C.DisableTorchFunction():
            result, watch, counts = self._host.call(self._target, args, kwargs, count=True)
        record_remote_watch(watch)
        return result, counts

    def remote_timer(self, input_sets, runtime):
        """A no-argument function returning the milliseconds of one timing of this function on
        `input_sets`, cycled. On a GPU: do_bench in the candidate. Under the interpreter: one
        call, measured here as the CPU time the candidate's processes used (read from the kernel,
        so not something the candidate reports)."""
        host = self._host
        key = f"sets-{id(input_sets)}"

        def store():
            sets = [[host.wire.encode(list(a)), host.wire.encode(dict(k))["v"]] for a, k in input_sets]
            reply = host.request({"op": "store", "key": key, "sets": sets})
            if not reply["ok"]:
                raise rebuild_exception(reply.get("error") or {})

        def timed() -> float:
            if host.proc is None or getattr(host, "_stored", None) != key:
                store()
                host._stored = key
            before = host.cpu_seconds()
            reply = host.request({"op": "time", "target": self._target, "key": key,
                                  "interpreter": runtime.interpreter})
            used = host.cpu_seconds() - before
            if not reply["ok"]:
                raise rebuild_exception(reply.get("error") or {})
            if runtime.interpreter:
                return used * 1e3
            ms = reply.get("ms")
            if not isinstance(ms, (int, float)) or not ms > 0:
                raise CandidateDied("malformed reply: timing")
            return float(ms)
        return timed


def module_function_names(source: str) -> list[str]:
    """Top-level functions of a module, found without running it."""
    return [node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]


def run_cell(code: str, namespace: dict, name: str):
    """exec a test cell; if it ends in an expression, return its value (nbgrader's partial credit
    comes from a cell's last value, e.g. the performance points)."""
    tree = ast.parse(code)
    tail = tree.body[-1] if tree.body else None
    last = tail if isinstance(tail, ast.Expr) else None
    if last is not None:
        tree.body.pop()
    exec(compile(tree, f"<{name}>", "exec"), namespace)
    if last is None:
        return None
    return eval(compile(ast.Expression(last.value), f"<{name}>", "eval"), namespace)


def judge(spec: dict) -> list[dict]:
    from .. import device, problems, verdict
    from ..checks import CheckFailed

    threads.apply()  # the task's share of the cores (threads.task_share), for the diagnosis run here
    runtime = device.configure(verbose=False)
    gpu = not runtime.interpreter
    os.environ["COURSE_GRADING"] = "1"
    os.environ.pop("COURSE_FEEDBACK_RUN", None)  # its calls of `check` (the performance gate) always run
    sandboxed = bool(spec.get("sandboxed", True))
    student = CandidateProcess(spec["module"], sandboxed=sandboxed, gpu=gpu, label="student")
    hosts = [student]
    if spec.get("reference_module"):
        reference = CandidateProcess(spec["reference_module"], sandboxed=sandboxed, gpu=gpu, label="reference")
        hosts.append(reference)
        # Under the interpreter its answers are kept between judges (reference_cache): a class
        # asks the reference the same questions for every submission.
        problems.set_reference_override(spec["assignment"], cached_reference(
            RemoteFunction(reference, spec["kernel_function"]), spec["reference_module"], runtime.interpreter))
    names = {name: RemoteFunction(student, name) for name in module_function_names(spec["module"])}
    verdicts = []
    try:
        for test, code in spec["tests"]:
            namespace = {"__name__": "__judge__", **names}
            score = None
            # The cell's checks run here, so what they report is the judge's own finding; what
            # they print goes to the judge's log only.
            with verdict.collect() as cases:
                try:
                    value = run_cell(code, namespace, test)
                    passed, message = True, ""
                    if isinstance(value, numbers.Real) and not isinstance(value, bool):
                        score = float(value)
                except CheckFailed as exc:
                    passed, message = False, exc.message
                except Exception as exc:  # a test that cannot finish gives no points, with its reason
                    passed, message = False, f"{type(exc).__name__}: {exc}"[:300]
            verdicts.append(verdict.TestVerdict(test, passed, message, cases, score).to_dict())
    finally:
        for host in hosts:
            host.stop()
    return verdicts


def main(spec_path: str, result_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = {"verdicts": judge(spec), "error": ""}
    except JudgeFailure as exc:
        result = {"verdicts": [], "error": str(exc)}
    tmp = Path(result_path).with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(result_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
