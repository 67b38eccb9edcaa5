"""The judge server (autograder/grading/judge_server.py): every judge is a fresh child of one warm
process, with the environment it was asked for; a judge over its time is stopped with the candidate it
started; a server that dies costs the judge at work its verdict and nothing after it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from autograder.grading import judge_server
from autograder.grading.judge_server import JudgeProcess

# The test cell a judge runs: what it sees of itself, of a module global an earlier judge may have
# set, of its environment, and of the candidate (`answer` is the candidate's function, called across
# the process boundary).
REPORT = """
import json, os
import autograder.grading.judge as judge_module
seen = getattr(judge_module, "LEFT_BY_AN_EARLIER_JUDGE", None)
judge_module.LEFT_BY_AN_EARLIER_JUDGE = os.getpid()
print("REPORT " + json.dumps({"pid": os.getpid(), "parent": os.getppid(), "session": os.getsid(0), "seen": seen,
                              "asked": os.environ.get("JUDGE_SERVER_TEST"), "answer": answer()}))
"""
HANG = "answer()  # starts the candidate\nimport time\nwhile True:\n    time.sleep(0.05)"


def _judge(tmp_path, name: str, test_code: str, **environment) -> tuple[JudgeProcess, dict]:
    folder = tmp_path / name
    folder.mkdir()
    spec = {"module": "def answer():\n    return 42\n", "sandboxed": False, "assignment": "problem3",
            "tests": [["test_" + name, test_code]]}
    (folder / "spec.json").write_text(json.dumps(spec))
    paths = {"spec": folder / "spec.json", "result": folder / "verdicts.json", "log": folder / "judge.log"}
    judge = JudgeProcess(paths["spec"], paths["result"], paths["log"], dict(os.environ, **environment))
    return judge, paths


def _report(paths) -> dict:
    lines = [line for line in paths["log"].read_text().splitlines() if line.startswith("REPORT ")]
    assert len(lines) == 1, paths["log"].read_text()[-2000:]
    return json.loads(lines[0].removeprefix("REPORT "))


def _candidates_of(pid: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the judge starts its candidate before it runs the test
        found = [p for p in psutil.Process(pid).children(recursive=True) if "autograder.grading.candidate" in
                 " ".join(p.cmdline())]
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("the judge started no candidate")


def test_each_judge_is_a_fresh_child_of_one_warm_server_with_the_environment_it_was_given(tmp_path):
    reports = []
    for name in ("first", "second"):
        judge, paths = _judge(tmp_path, name, REPORT, JUDGE_SERVER_TEST=name)
        assert judge.wait(300) and judge.exit_code == 0, paths["log"].read_text()[-2000:]
        verdicts = json.loads(paths["result"].read_text())
        assert verdicts["error"] == "" and [v["passed"] for v in verdicts["verdicts"]] == [True]
        reports.append(_report(paths))
    first, second = reports
    assert first["answer"] == second["answer"] == 42                 # each reached its own candidate
    assert [first["asked"], second["asked"]] == ["first", "second"]  # the environment of its request
    assert first["parent"] == second["parent"] != os.getpid()        # forked by one server, not by us
    assert first["pid"] != second["pid"] and first["session"] == first["pid"]  # a session of its own
    assert first["seen"] is None and second["seen"] is None          # nothing left by the judge before


def test_a_judge_over_its_time_is_stopped_with_its_candidate_and_the_server_serves_on(tmp_path):
    judge, paths = _judge(tmp_path, "hangs", HANG)
    server_pid = judge._server.process.pid
    candidates = _candidates_of(judge.pid)
    assert not judge.wait(1.0)
    judge.kill()
    assert judge.exit_code == -signal.SIGKILL
    assert not psutil.pid_exists(judge.pid) or psutil.Process(judge.pid).status() == psutil.STATUS_ZOMBIE
    gone, alive = psutil.wait_procs(candidates, timeout=30)   # bwrap's --die-with-parent, or stdin's end
    assert alive == []
    assert not paths["result"].exists()
    after, after_paths = _judge(tmp_path, "after", REPORT)
    assert after.wait(300) and after.exit_code == 0
    assert _report(after_paths)["parent"] == server_pid   # the same server, given back after the kill


def test_a_server_that_dies_costs_the_judge_at_work_its_verdict_and_nothing_after_it(tmp_path):
    judge, paths = _judge(tmp_path, "orphaned", HANG)
    _candidates_of(judge.pid)
    server = judge._server.process
    server.kill()
    assert judge.wait(30), "a judge whose server died is over"
    assert judge.exit_code == -signal.SIGKILL and not paths["result"].exists()
    deadline = time.monotonic() + 10
    while psutil.pid_exists(judge.pid) and psutil.Process(judge.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the judge outlived its server"
        time.sleep(0.1)
    next_judge, next_paths = _judge(tmp_path, "next", REPORT)
    assert next_judge.wait(300) and next_judge.exit_code == 0
    assert _report(next_paths)["parent"] != server.pid               # a new server
    assert all(s.process.pid != server.pid for s in judge_server._idle)


def test_a_server_that_never_answers_is_given_up_with_the_reason(tmp_path, monkeypatch):
    """A server stuck before its first answer (say, importing torch from a hung file system) must
    not hold grading forever: the judge is given up, and verify's caller records why."""
    def stuck(self):
        self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self._requests, self._replies = self.process.stdin.fileno(), self.process.stdout.fileno()
        self._pending = b""

    monkeypatch.setattr(judge_server._Server, "__init__", stuck)
    monkeypatch.setattr(judge_server, "START_TIMEOUT_S", 1.0)
    monkeypatch.setattr(judge_server, "_idle", [])
    started = time.monotonic()
    with pytest.raises(judge_server.JudgeServerGone, match="forked no judge within 1 s"):
        _judge(tmp_path, "stuck", REPORT)
    assert time.monotonic() - started < 30
    assert judge_server._idle == []   # the stuck server was stopped, not kept
