"""The notebook kernel that `nbgrader autograde` starts, inside the sandbox.

nbgrader itself stays outside: it finds this module through a kernelspec named like the
notebook's kernel (`install_kernelspec`), and this launcher, run by jupyter_client outside the
sandbox, replaces itself with bubblewrap running ipykernel. The kernel talks to nbgrader over
jupyter_client's `ipc` transport (Unix sockets next to the connection file): a kernel in a new
network namespace cannot reach the grader's loopback. Interrupts go as messages, because a signal
would stop bubblewrap rather than the cell.

    python -m autograder.grading.sandboxed_kernel SCRATCH CONNECTION_FILE
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

KERNEL_NAME = "python3"           # the name every course notebook asks for
PASSED_ENV = ("TRITON_INTERPRET", "COURSE_GRADING", "COURSE_FEEDBACK_RUN", "COURSE_CASE_TIMEOUT_S", "OMP_NUM_THREADS",
              "MKL_NUM_THREADS", "COURSE_THREADS", "CUDA_VISIBLE_DEVICES")


def install_kernelspec(scratch: Path) -> tuple[dict, list]:
    """Write a kernelspec that starts the sandboxed kernel. Returns (environment, arguments) for
    nbgrader: the environment makes it find this spec first; the arguments make its kernel
    manager use Unix sockets, at an absolute path in a folder the sandbox sees (jupyter_client's
    default ipc address is relative to the working directory, which differs on the two sides)."""
    spec_dir = scratch / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    runtime = scratch / "jupyter-runtime"
    runtime.mkdir(exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "autograder.grading.sandboxed_kernel", str(scratch), "{connection_file}"],
        "display_name": "Python 3 (course sandbox)",
        "language": "python",
        "interrupt_mode": "message",
    }))
    env = {"JUPYTER_PATH": str(scratch / "jupyter"), "JUPYTER_RUNTIME_DIR": str(runtime)}
    return env, ["--KernelManager.transport=ipc", f"--KernelManager.ip={runtime / 'kernel'}"]


def main(scratch: str, connection_file: str) -> None:
    from . import sandbox

    notebook_dir = Path.cwd()  # jupyter_client starts kernels in the notebook's folder
    connection = Path(connection_file).resolve()
    runtime = (Path(scratch) / "jupyter-runtime").resolve()
    info = json.loads(connection.read_text())
    # The kernel may write only where its sockets go: never a shared folder such as /tmp.
    if info.get("transport") != "ipc" or Path(info.get("ip", "")).resolve().parent != runtime:
        sys.exit(f"the sandboxed kernel needs ipc sockets in {runtime} (nbgrader's --KernelManager.ip); "
                 f"got {info.get('transport')}://{info.get('ip')}")
    home = Path(scratch) / "kernel"
    home.mkdir(exist_ok=True)
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    gpu = os.environ.get("TRITON_INTERPRET") != "1" and bool(sandbox.gpu_device_nodes())
    argv = sandbox.command([sys.executable, "-m", "ipykernel_launcher", "-f", str(connection)],
                           scratch=home, readable=(notebook_dir, connection), writable=(runtime,), gpu=gpu,
                           env=env, cwd=notebook_dir)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
