"""Judges forked from a warm process: each judge is fresh, without paying for its imports every time.

A judge must be a process that never ran student code (verify.py). Started as `python -m
autograder.grading.judge`, each one spends about 1.7 CPU-seconds importing torch and numpy before it
judges anything: once per submission, a sixth of what grading one costs on two CPU cores. A judge
server (`python -m autograder.grading.judge_server`, started by the grading process) imports those
modules once, runs nothing else, and forks one child per judge, so every judge still starts from the
same untouched state. The child enters a session of its own (killing its process group stops the
candidates it started), takes the caller's environment and working directory as they are at the
request, and writes its output to a log file.

The protocol, one JSON line each way on the server's stdin and stdout: the request
{"spec", "result", "log", "cwd", "env"}; the replies {"pid": P} once the judge is forked, then
{"exit": CODE} once it has ended (negative: killed by that signal). A server runs one judge at a time;
a grading process that judges several at once gets a server for each.

The server imports only modules that decide nothing from the environment when imported (torch, numpy,
the wire format): the device, the problems and their Triton kernels are chosen in each judge, after its
environment is in place. It ends when its stdin closes, that is, with the grading process.

(Not multiprocessing's fork server: it imports the caller's `__main__` again in every child, so a
judge started from `python -m autograder demo`, a script or a Ray worker would first run their top
level again; grading problem 3's samples so took twice as long before the judges failed.)
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback

# --- the server -----------------------------------------------------------------------------------


def _judge_child(request: dict, replies_fd: int) -> int:
    """In the forked child: become the judge that `request` describes; returns its exit code."""
    os.setsid()
    os.close(replies_fd)  # the server's reply pipe: the grading process must see it close with the server
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)   # from here on nothing reaches the server's reply pipe
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # nor does anything read the server's requests
    os.close(null)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    try:
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        from .judge import main

        main(request["spec"], request["result"])
        return 0
    except BaseException:  # the log says why; no result file means no grade (verify.py)
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def serve() -> None:
    from . import judge  # noqa: F401  the imports every judge would otherwise make on its own

    replies = os.fdopen(os.dup(1), "w", buffering=1)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os._exit(_judge_child(request, replies.fileno()))
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"exit": os.waitstatus_to_exitcode(status)}) + "\n")


# --- the grading process's side ---------------------------------------------------------------------


# How long a judge may take to be forked: a new server imports torch first, on a busy machine.
START_TIMEOUT_S = 300.0


class JudgeServerGone(RuntimeError):
    """The judge server ended (killed, or out of memory) or did not answer in time."""


class _Server:
    def __init__(self):
        # One thread, so that forking it is safe: numpy's OpenBLAS would otherwise start a thread pool
        # when imported (the judges' arithmetic is torch's, whose threads each judge sets).
        self.process = subprocess.Popen([sys.executable, "-m", "autograder.grading.judge_server"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                        env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
        assert self.process.stdin is not None and self.process.stdout is not None
        self._requests = self.process.stdin.fileno()
        self._replies = self.process.stdout.fileno()
        self._pending = b""   # what has been read of the replies and not yet returned

    def send(self, request: dict) -> None:
        try:
            os.write(self._requests, (json.dumps(request) + "\n").encode())
        except OSError as exc:
            raise JudgeServerGone(f"the judge server ended (exit {self.process.poll()})") from exc

    def reply(self, timeout_s: float | None = None) -> dict | None:
        """The next reply, or None if none came within `timeout_s`. Reads the pipe itself (not through
        a buffered reader, whose buffer a select() would not see)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while b"\n" not in self._pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._replies], [], [], left)[0]:
                return None
            chunk = os.read(self._replies, 65536)
            if not chunk:
                raise JudgeServerGone(f"the judge server ended (exit {self.process.wait()})")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


_idle: list[_Server] = []
_idle_lock = threading.Lock()


def _take_server() -> _Server:
    with _idle_lock:
        while _idle:
            server = _idle.pop()
            if server.process.poll() is None:
                return server
            server.close()
    return _Server()


def _give_back(server: _Server) -> None:
    with _idle_lock:
        _idle.append(server)


class JudgeProcess:
    """One judge at work, forked by a judge server: `wait` for it, or `kill` it and what it started."""

    def __init__(self, spec_path, result_path, log_path, environment: dict[str, str]):
        self._server = _take_server()
        self.exit_code: int | None = None
        try:
            self._server.send({"spec": str(spec_path), "result": str(result_path), "log": str(log_path),
                               "cwd": os.getcwd(), "env": dict(environment)})
            started = self._server.reply(START_TIMEOUT_S)
            if started is None:
                raise JudgeServerGone(f"the judge server forked no judge within {START_TIMEOUT_S:g} s")
        except BaseException:
            self._server.close()
            raise
        self.pid: int = started["pid"]

    def wait(self, timeout_s: float | None = None) -> bool:
        """Whether the judge ended within `timeout_s` (None: wait as long as it takes)."""
        if self.exit_code is not None:
            return True
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            ended = self._server.reply(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except JudgeServerGone:
            self._server.close()
            self._signal(signal.SIGKILL)       # the judge may outlive its server: it must not write late
            self.exit_code = -signal.SIGKILL
            return True
        if ended is None:
            return False
        self.exit_code = ended["exit"]
        _give_back(self._server)
        return True

    def kill(self) -> None:
        """Stop the judge and every process of its session (its candidates); wait until it has ended."""
        if self.exit_code is not None:
            return
        self._signal(signal.SIGKILL)
        self.wait()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)        # the judge's session: it and its candidates
        except ProcessLookupError:
            try:
                os.kill(self.pid, sig)      # forked, but not yet in a session of its own
            except ProcessLookupError:      # ended meanwhile
                pass


if __name__ == "__main__":
    serve()
