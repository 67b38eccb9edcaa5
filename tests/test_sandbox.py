"""The bubblewrap sandbox (autograder.grading.sandbox) keeps hostile code in: each test runs a
process inside it and checks one wall from outside. Most checks share one sandboxed Python run
(importing torch costs seconds), and each has a host-side control so that it can fail."""
import contextlib
import glob
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

import autograder
from autograder.grading import sandbox

STATUS = sandbox.probe()
pytestmark = pytest.mark.skipif(not STATUS.available, reason=f"no bubblewrap sandbox here: {STATUS.reason}")

PACKAGE = Path(autograder.__file__).resolve().parent
REPO = PACKAGE.parent

# Runs inside the sandbox: tries what hostile code would try and prints what happened as JSON.
REPORT = r"""
import glob, json, os, socket, sys
args = json.loads(sys.argv[1])

def attempt(action):
    try:
        action()
        return "ok"
    except OSError as e:
        return type(e).__name__

def write(path):
    with open(path, "w") as f:
        f.write("written from the sandbox")

def connect(host, port):
    socket.create_connection((host, port), timeout=2).close()

import autograder, torch
print(json.dumps({
    "autograder": autograder.__file__,
    "torch": torch.__version__,
    "visible": {p: os.path.exists(p) for p in args["look"]},
    "write": {p: attempt(lambda p=p: write(p)) for p in args["write"]},
    "loopback": attempt(lambda: connect("127.0.0.1", args["port"])),
    "internet": attempt(lambda: connect("1.1.1.1", 53)),
    "interfaces": [name for _, name in socket.if_nameindex()],
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "uid": os.getuid(),
    "gid": os.getgid(),
    "status": dict(line.split(":\t") for line in open("/proc/self/status").read().splitlines()),
    "env": dict(os.environ),
    "nvidia": glob.glob("/dev/nvidia*"),
    "sysctl": attempt(lambda: os.close(os.open("/proc/sys/kernel/core_pattern", os.O_WRONLY))),
    "shadow": attempt(lambda: open("/etc/shadow").read()),
    "tmp": attempt(lambda: write(args["tmp"])),
    "cwd": os.getcwd(),
}))
"""


def run(argv, scratch, **kwargs):
    return subprocess.run(sandbox.command(argv, scratch=scratch, **kwargs), capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One sandboxed run of REPORT, and the host-side things it was pointed at."""
    scratch = tmp_path_factory.mktemp("scratch")
    # A secret outside scratch and outside /tmp, so that only the mount allowlist can hide it.
    secret_dir = Path(tempfile.mkdtemp(prefix="sandbox-secret-", dir="/var/tmp"))
    secret = secret_dir / "answers.txt"
    secret.write_text("the hidden tests")
    host_tmp_fd, host_tmp = tempfile.mkstemp(prefix="sandbox-host-", dir="/tmp")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    outside = {"package": PACKAGE / "pwned.py", "prefix": Path(sys.prefix) / "pwned",
               "secret_dir": secret_dir / "pwned", "repo": REPO / "pwned"}
    args = {
        "look": [str(secret), str(REPO / "solutions"), str(REPO / "tests"), str(REPO / "pyproject.toml"), host_tmp],
        "write": [str(p) for p in outside.values()] + [str(scratch / "result.txt")],
        "port": port,
        "tmp": f"/tmp/sandbox-private-{os.getpid()}-{port}",
    }
    host_env = dict(os.environ, SANDBOX_TEST_SECRET="hunter2")
    argv = sandbox.command([sys.executable, "-c", REPORT, json.dumps(args)], scratch=scratch,
                           env={"OMP_NUM_THREADS": "2", "TRITON_INTERPRET": "1"})
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=host_env)
        assert done.returncode == 0, done.stderr
        yield {"report": json.loads(done.stdout), "scratch": scratch, "secret": secret, "host_tmp": host_tmp,
               "port": port, "outside": outside, "tmp": args["tmp"]}
    finally:
        listener.close()
        os.close(host_tmp_fd)
        os.unlink(host_tmp)
        for p in secret_dir.iterdir():
            p.unlink()
        secret_dir.rmdir()


def test_probe_says_available_here():
    assert sandbox.probe() == sandbox.SandboxStatus(True, "")
    sandbox.require()  # does not raise


def test_probe_without_bwrap_says_install_bubblewrap(monkeypatch):
    monkeypatch.setattr(sandbox, "_probed", None)  # restored afterwards, with the real answer
    monkeypatch.setattr(sandbox.shutil, "which", lambda name, *a, **k: None)
    status = sandbox.probe(refresh=True)
    assert not status.available and "bubblewrap" in status.reason
    with pytest.raises(sandbox.SandboxUnavailable, match="bubblewrap"):
        sandbox.require()


def test_probe_fails_closed_when_bwrap_fails(monkeypatch):
    monkeypatch.setattr(sandbox, "_probed", None)
    monkeypatch.setattr(sandbox, "command", lambda argv, **kw: ["bwrap", "--no-such-flag", "--", *argv])
    status = sandbox.probe(refresh=True)
    assert not status.available and "no-such-flag" in status.reason and "seccomp" in status.reason


def test_imports_autograder_and_torch(world):
    report = world["report"]
    assert Path(report["autograder"]).resolve() == PACKAGE / "__init__.py"
    assert report["torch"]


def test_sees_nothing_of_the_repository_but_the_package(world):
    visible = world["report"]["visible"]
    assert world["secret"].exists() and (REPO / "pyproject.toml").exists()  # there on the host
    assert not visible[str(world["secret"])]
    assert not visible[str(REPO / "solutions")]
    assert not visible[str(REPO / "tests")]
    assert not visible[str(REPO / "pyproject.toml")]


def test_writes_only_into_scratch(world):
    writes = world["report"]["write"]
    for name, path in world["outside"].items():
        assert not path.exists(), name   # nothing reached the host
        # Inside, /tmp is the sandbox's own tmpfs: for a checkout under /tmp, the path of the
        # repository is a folder on that tmpfs, and a write there goes where the sandbox's /tmp goes.
        if not path.is_relative_to("/tmp"):
            assert writes[str(path)] != "ok", name
    assert writes[str(world["scratch"] / "result.txt")] == "ok"
    assert (world["scratch"] / "result.txt").read_text() == "written from the sandbox"


def test_tmp_is_private(world):
    assert os.path.exists(world["host_tmp"])
    assert not world["report"]["visible"][world["host_tmp"]]
    assert world["report"]["tmp"] == "ok"  # writable inside (Python and Triton need a /tmp) ...
    assert not os.path.exists(world["tmp"])  # ... and gone with the sandbox


def test_no_network(world):
    report = world["report"]
    socket.create_connection(("127.0.0.1", world["port"]), timeout=2).close()  # the host can connect
    assert report["loopback"] != "ok"
    assert report["internet"] == "OSError"  # ENETUNREACH: no route at all, not a timeout
    assert report["interfaces"] == ["lo"]


def test_sees_no_host_process(world):
    pids = world["report"]["pids"]
    assert len(pids) <= 4 and max(pids) < 10, pids  # bwrap's init, python and little else
    assert os.getpid() not in pids
    assert len(psutil.pids()) > len(pids)


def test_unprivileged_identity(world):
    report = world["report"]
    assert (report["uid"], report["gid"]) == (65534, 65534)
    assert int(report["status"]["CapEff"], 16) == 0
    assert int(report["status"]["CapBnd"], 16) == 0
    assert report["status"]["NoNewPrivs"] == "1"


def test_cannot_reach_host_kernel_settings_or_shadow(world):
    # The sandbox uid is the caller's uid outside: as root, a writable /proc/sys would let it set
    # kernel.core_pattern (a program the host runs as root), and /etc/shadow would be readable.
    report = world["report"]
    assert report["sysctl"] != "ok"
    assert report["shadow"] != "ok"


def test_environment_is_clean(world):
    env, scratch = world["report"]["env"], str(world["scratch"].resolve())
    assert "SANDBOX_TEST_SECRET" not in env
    assert env["HOME"] == f"{scratch}/home" and env["TRITON_CACHE_DIR"] == f"{scratch}/triton-cache"
    assert env["OMP_NUM_THREADS"] == "2" and env["MKL_NUM_THREADS"] == "1" and env["TRITON_INTERPRET"] == "1"
    assert set(env) <= {"PATH", "HOME", "TRITON_CACHE_DIR", "TMPDIR", "LANG", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                        "PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "TRITON_INTERPRET", "PWD"}
    assert world["report"]["cwd"] == scratch


def test_no_gpu_nodes_without_gpu(world):
    assert world["report"]["nvidia"] == []
    assert sandbox.gpu_device_nodes() == [p for p in sandbox.gpu_device_nodes() if os.path.exists(p)]
    if not glob.glob("/dev/nvidia*"):
        assert sandbox.gpu_device_nodes() == []


def test_gpu_nodes_are_bound_only_with_gpu(tmp_path, monkeypatch):
    # A stand-in node outside /dev and /tmp, so that only the gpu flag can make it visible.
    fake = Path(tempfile.mkdtemp(prefix="sandbox-fake-dev-", dir="/var/tmp")) / "nvidia0"
    fake.write_text("")
    monkeypatch.setattr(sandbox, "gpu_device_nodes", lambda: [str(fake)])
    try:
        seen = {gpu: run(["sh", "-c", f"test -e {fake} && echo yes || echo no"], tmp_path, gpu=gpu).stdout.strip()
                for gpu in (False, True)}
    finally:
        fake.unlink()
        fake.parent.rmdir()
    assert seen == {False: "no", True: "yes"}


def test_readable_and_writable_paths(tmp_path):
    shared, out = tmp_path / "shared", tmp_path / "out"
    shared.mkdir()
    out.mkdir()
    (shared / "inputs.txt").write_text("inputs\n")
    done = run(["sh", "-c", f"cat {shared}/inputs.txt; echo x > {shared}/new || echo read-only; echo y > {out}/new"],
               tmp_path / "scratch", readable=(shared,), writable=(out,))
    assert done.stdout.split() == ["inputs", "read-only"]
    assert not (shared / "new").exists() and (out / "new").read_text() == "y\n"


def test_children_die_with_the_sandbox(tmp_path):
    script = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    proc = subprocess.Popen(sandbox.command([sys.executable, "-c", script], scratch=tmp_path))
    try:
        deadline, tree = time.monotonic() + 20, []
        while not any(p.cmdline() == ["sleep", "300"] for p in tree) and time.monotonic() < deadline:
            time.sleep(0.05)
            tree = psutil.Process(proc.pid).children(recursive=True)
        assert any(p.cmdline() == ["sleep", "300"] for p in tree), "the background process did not start"
    finally:
        proc.kill()  # what a timeout does to a hung submission
        proc.wait()
    gone, alive = psutil.wait_procs(tree, timeout=5)
    for p in alive:  # do not leave them behind when the test fails
        with contextlib.suppress(psutil.NoSuchProcess):  # killing the namespace's init killed the rest
            p.kill()
    assert not alive, [p.pid for p in alive]
