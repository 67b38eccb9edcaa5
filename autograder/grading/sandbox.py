"""A bubblewrap (`bwrap`) sandbox for processes that run student code.

Threat model: student code is hostile. `command()` wraps an argv so that the process, and
everything it starts:

- sees an allowlist of the file system: read-only system dirs (/usr, /etc, ...), the Python
  installation and the `autograder` package folder (not the rest of the repository: no solutions,
  no hidden tests), the caller's `readable` paths; it can write only `scratch`, the caller's
  `writable` paths and a private /tmp;
- has no network (own, empty network namespace: not even the host's loopback), its own PID, IPC,
  UTS and cgroup namespaces (no host process can be seen or signalled), cannot create further
  user namespaces, and runs as uid/gid 65534 with no capabilities (bounding set included);
- starts from a clean environment (no host secrets in variables), its own HOME and Triton cache
  inside scratch, one OMP/MKL thread by default;
- dies when the process that started bwrap dies (--die-with-parent), with all it started.

What it does not guarantee:

- resource limits: host memory (needs cgroups), GPU memory, CPU time, disk space in scratch and
  /tmp, process count. Those are limited elsewhere (timeouts and the grading task's own limits);
- anything about the GPU beyond device access: with gpu=True the process can use the whole GPU,
  read what the driver lets any process read, and leave it busy or in a bad state;
- that outputs are honest: whatever the process writes (files in scratch, stdout, tensors) is
  hostile data. Files in scratch may be symlinks, FIFOs or set-uid programs: read them without
  following links, never execute them, never copy their modes;
- secrecy of what is mounted: everything under `readable`, the Python installation and the package
  can be read, and a root-owned but not world-readable file is readable too when the grader runs
  as root (the sandbox uid maps to the caller's uid outside); `command()` hides the /etc files
  that an unprivileged user could not read, but it is best to run the grader as a non-root user;
- kernel bugs: namespaces share the host kernel (a container or VM per run is stronger).
"""
from __future__ import annotations

import functools
import os
import shutil
import site
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import autograder

SANDBOX_ID = "65534"  # nobody/nogroup inside; outside, the user namespace maps it to the caller's uid

_ADVICE_INSTALL = "install the `bubblewrap` package (apt-get install bubblewrap, dnf install bubblewrap)"
_ADVICE_NAMESPACES = (
    "Docker: run the container with --security-opt seccomp=unconfined (or a seccomp profile that "
    "allows unshare/clone of namespaces); Ubuntu 24.04: `sysctl kernel.apparmor_restrict_unprivileged_userns=0` "
    "or an AppArmor profile for bwrap; elsewhere check that user namespaces are enabled "
    "(`sysctl user.max_user_namespaces` > 0)"
)


@dataclass(frozen=True)
class SandboxStatus:
    available: bool
    reason: str  # empty when available; otherwise why not and what to do


class SandboxUnavailable(RuntimeError):
    """Grading fails closed: no sandbox, no student code."""


_probed: SandboxStatus | None = None


def probe(refresh: bool = False) -> SandboxStatus:
    """Whether `command()` works here: starts `bwrap <the same flags> true` once (cached). Never raises."""
    global _probed
    if _probed is None or refresh:
        try:
            _probed = _probe()
        except Exception as exc:  # a probe that crashes means "no sandbox", not a crashed grader
            _probed = SandboxStatus(False, f"the sandbox probe failed ({exc!r}); {_ADVICE_INSTALL}")
    return _probed


def _probe() -> SandboxStatus:
    if not sys.platform.startswith("linux"):
        return SandboxStatus(False, f"the sandbox needs Linux (bubblewrap); {sys.platform} is not "
                                    "supported: grade on a Linux machine")
    if shutil.which("bwrap") is None:
        return SandboxStatus(False, f"bubblewrap (`bwrap`) is not on PATH: {_ADVICE_INSTALL}")
    with tempfile.TemporaryDirectory(prefix="sandbox-probe-") as scratch:
        try:
            done = subprocess.run(command(["true"], scratch=Path(scratch)), capture_output=True,
                                  text=True, timeout=60)
        except subprocess.TimeoutExpired:
            return SandboxStatus(False, "bubblewrap did not start `true` within 60 s")
    if done.returncode == 0:
        return SandboxStatus(True, "")
    said = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    return SandboxStatus(False, f"bubblewrap could not start a sandbox here ({said}). If namespaces are refused: "
                                f"{_ADVICE_NAMESPACES}")


def require() -> None:
    status = probe()
    if not status.available:
        raise SandboxUnavailable(status.reason)


def gpu_device_nodes() -> list[str]:
    """The NVIDIA device nodes that exist: control, unified memory, one per GPU (and MIG capabilities)."""
    names = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-caps"]
    gpus = sorted((p for p in Path("/dev").glob("nvidia*") if p.name[6:].isdigit()), key=lambda p: int(p.name[6:]))
    return [p for p in names if os.path.exists(p)] + [str(p) for p in gpus]


@functools.lru_cache(maxsize=1)
def _supports(flag: str) -> bool:
    try:
        return flag in subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False


def _python_paths() -> list[Path]:
    """The interpreter, its standard library and site-packages: each as named and resolved, since
    a venv's python is a symlink into the base installation (here /root/.pyenv/..., under a mode
    700 /root, so the dirs themselves are bound, not their parents)."""
    named = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()}
    paths = {Path(p) for p in named} | {Path(p).resolve() for p in named}
    return sorted(p for p in paths if not any(q in p.parents for q in paths))  # drop nested ones


@functools.lru_cache(maxsize=1)
def _etc_secrets() -> tuple[list[str], list[str]]:
    """Files and dirs under /etc that others cannot read (shadow, private keys). The sandbox uid is
    the caller's uid outside, so for a root grader they would be readable: cover them."""
    def hidden(path: str, bits: int) -> bool:
        try:
            return not os.path.islink(path) and os.lstat(path).st_mode & bits != bits
        except OSError:  # gone meanwhile
            return False

    files, dirs = [], []
    for root, subdirs, names in os.walk("/etc"):
        dirs += [os.path.join(root, d) for d in subdirs if hidden(os.path.join(root, d), stat.S_IROTH | stat.S_IXOTH)]
        subdirs[:] = [d for d in subdirs if os.path.join(root, d) not in dirs]  # covered as a whole
        files += [os.path.join(root, f) for f in names if hidden(os.path.join(root, f), stat.S_IROTH)]
    return files, dirs


def command(argv: list[str], *, scratch: Path, readable: tuple = (), writable: tuple = (), gpu: bool = False,
            env: dict | None = None, cwd: Path | None = None) -> list[str]:
    """The full argv that runs `argv` in the sandbox: ["bwrap", ...flags..., "--", *argv].

    Creates scratch, scratch/home and scratch/triton-cache, and makes scratch private (mode 700):
    files the sandbox writes there belong to the caller's uid outside."""
    scratch = Path(scratch).resolve()
    home, cache = scratch / "home", scratch / "triton-cache"
    for folder in (scratch, home, cache):
        folder.mkdir(parents=True, exist_ok=True)
    scratch.chmod(0o700)  # other host users must not reach (or run) what the sandbox leaves here

    # Every namespace (net, pid, ipc, uts, cgroup; user is required, not "try"); killed with its
    # starter; its own session, so it cannot push keystrokes into the grader's terminal (TIOCSTI);
    # an empty capability bounding set (bwrap run by root keeps a full one otherwise).
    args = ["bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
            "--uid", SANDBOX_ID, "--gid", SANDBOX_ID, "--cap-drop", "ALL", "--hostname", "sandbox"]
    if _supports("--disable-userns"):  # no nested user namespace, so no way to regain capabilities
        args.append("--disable-userns")

    args += ["--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/lib", "/lib64", "/sbin"):  # merged /usr (Debian): links into /usr
        args += ["--symlink", os.readlink(d), d] if os.path.islink(d) else ["--ro-bind-try", d, d]
    args += ["--ro-bind", "/etc", "/etc"]
    files, dirs = _etc_secrets()
    for f in files:
        args += ["--ro-bind", "/dev/null", f]
    for d in dirs:
        args += ["--tmpfs", d, "--remount-ro", d]

    # bwrap 0.8.0 leaves /proc/sys writable (its own cover is skipped because the dir is mode 555),
    # and the sandbox uid is the caller's uid outside: as root it could write kernel.core_pattern.
    args += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev"]
    if gpu:  # --dev-bind: a plain bind is mounted nodev and CUDA says "Insufficient Permissions"
        for node in gpu_device_nodes():
            args += ["--dev-bind", node, node]
    args += ["--tmpfs", "/tmp"]

    package = Path(autograder.__file__).resolve().parent
    # Libraries the grader found through PYTHONPATH (wheels unpacked into a folder, as on a GPU
    # runner without a package index): the same inside, read-only. Never the repository itself.
    extra_paths = [Path(p).resolve() for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    extra_paths = [p for p in dict.fromkeys(extra_paths)
                   if p.is_dir() and not package.parent.is_relative_to(p) and not p.is_relative_to(package.parent)]
    binds = [(p, "--ro-bind") for p in _python_paths() + extra_paths] + [(package, "--ro-bind")]
    binds += [(Path(p).resolve(), "--ro-bind") for p in readable]
    binds += [(Path(p).resolve(), "--bind") for p in writable] + [(scratch, "--bind")]
    # Parents before children, so a nested bind (scratch inside a readable dir) is not hidden.
    for path, flag in sorted(binds, key=lambda b: len(b[0].parts)):
        args += [flag, str(path), str(path)]
    # bwrap's root is a tmpfs owned by the sandbox uid: close it, so that only scratch, /tmp and
    # `writable` take writes (and no file can shadow a mounted one, e.g. on PYTHONPATH).
    args += ["--remount-ro", "/"]

    variables = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin",
        "HOME": str(home),
        "TRITON_CACHE_DIR": str(cache),
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    # An editable install finds the package through site-packages; a plain checkout needs its parent
    # on the path. Inside, that parent holds only what is bound above, not the rest of the repo.
    python_path = [str(p) for p in extra_paths]
    if str(package.parent) not in {str(Path(p).resolve()) for p in site.getsitepackages()}:
        python_path.insert(0, str(package.parent))
    if python_path:
        variables["PYTHONPATH"] = os.pathsep.join(python_path)
    variables.update(env or {})
    args.append("--clearenv")
    for name, value in variables.items():
        args += ["--setenv", name, str(value)]
    args += ["--chdir", str(Path(cwd).resolve() if cwd else scratch)]
    return args + ["--", *argv]
