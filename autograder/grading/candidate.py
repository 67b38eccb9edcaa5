"""The candidate: the only grading process that holds student code. It runs in the sandbox.

    python -m autograder.grading.candidate WORKDIR

WORKDIR holds `candidate_module.py` (the released locked cells with the student's answer cell,
or the reference kernel) and an exchange folder. The judge sends one JSON request per line on
stdin; the candidate answers one JSON line on the file descriptor that was stdout when it
started. Everything printed while it runs goes to stderr instead, so nothing the module prints
can look like an answer. The candidate only computes what it is asked: calls on the judge's
inputs, what those calls did (Triton launches, PyTorch ops, copies of inputs), and timings. It
decides nothing; whatever it answers, the judge checks.

Requests:
  {"op": "call", "target": "fn" or "fn.attr", "args": [...], "kwargs": {...}, "count": bool}
      -> {"ok": true, "result": v, "args": [v or null per argument: its value after the call
          when the call wrote into it], "kwargs": {name: v, for those written into}, "watch": {...},
          "counts": {...} (with "count": what the call's interpreted kernels asked of a GPU,
          autograder.counted_cost; the judge prices it)}
  {"op": "store", "key": k, "sets": [[args, kwargs], ...]}   input sets kept for timing
  {"op": "time", "target": t, "key": k, "interpreter": bool}
      -> {"ok": true, "ms": float} (GPU: do_bench's median over the sets; interpreter: one call)
  {"op": "exit"}
A failing request answers {"ok": false, "error": {"type": name, "message": text, "chain": [...]}}.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

MODULE_FILE = "candidate_module.py"
EXCHANGE = "exchange"


def _error(exc: BaseException) -> dict:
    chain: list[dict] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:  # Triton nests the helper's error as the cause
        chain.append({"type": type(seen).__name__, "message": str(seen)[:4000]})
        seen = seen.__cause__ or seen.__context__
    return {"type": type(exc).__name__, "message": str(exc)[:4000], "chain": chain,
            "error_message": str(getattr(exc, "error_message", "") or "")[:2000]}


def _resolve(module, target: str):
    obj = module
    for part in target.split("."):
        if part.startswith("__"):
            raise AttributeError(f"{target!r} is not a name the judge may call")
        obj = getattr(obj, part)
    return obj


def _bits_equal(a, b) -> bool:
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    view = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return bool(torch.equal(a.view(view), b.view(view))) if a.dtype != torch.bool else bool(torch.equal(a, b))


class Candidate:
    def __init__(self, workdir: Path):
        from autograder import device, threads

        from .wire import Exchange

        threads.apply()  # the grading task's share of the cores, before any student code runs
        self.runtime = device.configure(verbose=False)  # before any @triton.jit is defined
        self.wire = Exchange(workdir / EXCHANGE, "c")

    def load(self, workdir: Path) -> None:
        spec = importlib.util.spec_from_file_location("candidate_module", workdir / MODULE_FILE)
        assert spec is not None and spec.loader is not None  # a .py path always has a source loader
        self.module = importlib.util.module_from_spec(spec)
        sys.modules["candidate_module"] = self.module
        self.load_error = None
        try:
            spec.loader.exec_module(self.module)
        except BaseException as exc:  # reported on every call: the judge decides what it means
            self.load_error = exc
        self.sets: dict[str, list] = {}

    def _decode_args(self, request):
        # Tensors land on the device the judge made them on (a PyTorch exercise checks on the CPU
        # even where there is a GPU).
        args = self.wire.decode(request.get("args", []))
        kwargs = self.wire.decode({"t": "dict", "v": request.get("kwargs", {})})
        return args, kwargs

    def call(self, request) -> dict:
        import torch

        from autograder.integrity import watch_call

        if self.load_error is not None:
            raise self.load_error
        fn = _resolve(self.module, request["target"])
        args, kwargs = self._decode_args(request)
        before = [a.clone() if isinstance(a, torch.Tensor) else None for a in args]
        before_kw = {k: a.clone() for k, a in kwargs.items() if isinstance(a, torch.Tensor)}
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        counter: contextlib.AbstractContextManager = contextlib.nullcontext(None)
        if request.get("count"):
            if not self.runtime.interpreter:
                raise RuntimeError("counting needs the Triton interpreter (TRITON_INTERPRET=1)")
            from autograder.counted_cost import counting

            counter = counting()
        with watch_call(tensors) as watched, counter as counts:
            result = fn(*args, **kwargs)
            if self.runtime.device == "cuda":
                torch.cuda.synchronize()
        # Mirror writes into the arguments back to the judge (a counter the kernel fills, or a
        # kernel that wrongly writes into q): the judge's tensors then change as a local call's would.
        after = [None if b is None or _bits_equal(b, a) else self.wire.encode(a)
                 for a, b in zip(args, before, strict=True)]
        after_kw = {k: self.wire.encode(kwargs[k]) for k, b in before_kw.items() if not _bits_equal(b, kwargs[k])}
        # A dict or list argument is a place the call may report into (problem 6's `_visits=dict()`):
        # it goes back whole.
        containers = {str(i): self.wire.encode(a) for i, a in enumerate(args) if isinstance(a, (dict, list))}
        containers.update({k: self.wire.encode(a) for k, a in kwargs.items() if isinstance(a, (dict, list))})
        watch = {"ops": sorted(watched.ops), "functions": sorted(watched.functions),
                 "triton_launches": watched.triton_launches, "largest_numel": watched.largest_numel,
                 "enlarged_copies": [list(x) for x in watched.enlarged_copies]}
        reply = {"ok": True, "result": self.wire.encode(result), "args": after, "kwargs": after_kw,
                 "containers": containers, "watch": watch}
        if counts is not None:
            reply["counts"] = counts.to_dict()
        return reply

    def store(self, request) -> dict:
        self.sets[request["key"]] = [self._decode_args({"args": a, "kwargs": k}) for a, k in request["sets"]]
        return {"ok": True}

    def time(self, request) -> dict:
        import torch

        if self.load_error is not None:
            raise self.load_error
        fn = _resolve(self.module, request["target"])
        sets = self.sets[request["key"]]
        state = {"i": 0}

        def call():
            args, kwargs = sets[state["i"] % len(sets)]
            state["i"] += 1
            return fn(*args, **kwargs)
        if request.get("interpreter"):
            start = time.thread_time()
            call()
            return {"ok": True, "ms": (time.thread_time() - start) * 1e3}
        import triton

        ms = triton.testing.do_bench(call, warmup=25, rep=100, return_mode="median")
        torch.cuda.synchronize()
        return {"ok": True, "ms": float(ms)}


def main(workdir: str) -> None:
    # The answer channel is a private copy of stdout; fd 1 then points at stderr, so anything the
    # module prints (or a C library writes) lands in the log, never in the channel.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    candidate = Candidate(Path(workdir))
    # Ready before any student code has run: a candidate that never gets here is the grader's
    # problem (the sandbox or the environment), not the student's.
    answers.write(json.dumps({"ok": True, "ready": True}) + "\n")
    answers.flush()
    candidate.load(Path(workdir))
    handlers = {"call": candidate.call, "store": candidate.store, "time": candidate.time,
                "noop": lambda request: {"ok": True}}
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") == "exit":
            break
        try:
            reply = handlers[request["op"]](request)
        except BaseException as exc:  # student code may raise anything, SystemExit included
            reply = {"ok": False, "error": _error(exc)}
        answers.write(json.dumps(reply) + "\n")
        answers.flush()


if __name__ == "__main__":
    main(sys.argv[1])
