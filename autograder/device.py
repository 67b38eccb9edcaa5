"""Pick where kernels run: a CUDA GPU that Triton supports, or Triton's CPU interpreter.

`configure()` must run before any `@triton.jit` function is defined: Triton decides
at decoration time whether a kernel is compiled for the GPU or interpreted, so the
environment variable TRITON_INTERPRET has to be in place first.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

# Triton supports NVIDIA GPUs of compute capability 8.0 (Ampere) and newer. Since triton 3.3
# (triton-lang/triton#5066) a tl.dot on anything older compiles to plain FMA code without tensor
# cores, and bfloat16 needs sm_80 (T4 users report ptxas: ".bf16 requires .target sm_80");
# the maintainers say sm_75 "may work at times" but is not supported (triton-lang/triton#10918).
# So a Turing T4 (7.5, Colab's free GPU) runs the course in the interpreter, like a laptop.
MIN_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class Runtime:
    device: str            # "cuda" or "cpu"
    interpreter: bool      # True when kernels run through TRITON_INTERPRET=1
    dtypes: tuple          # the 16-bit dtypes that give trustworthy results here
    reason: str            # one sentence on why this runtime was chosen

    @property
    def default_dtype(self):
        return self.dtypes[0]

    def describe(self) -> str:
        names = ", ".join(str(d).replace("torch.", "") for d in self.dtypes)
        mode = "Triton interpreter on the CPU" if self.interpreter else "GPU"
        return f"{mode} ({self.reason}); dtypes checked here: {names}"


def _gpu_status():
    """Return (usable, reason) for the first CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU found"
    major, minor = torch.cuda.get_device_capability(0)
    name = torch.cuda.get_device_name(0)
    if (major, minor) < MIN_CAPABILITY:
        return False, unsupported_gpu_reason(name, (major, minor))
    return True, f"{name}, compute capability {major}.{minor}"


def unsupported_gpu_reason(name: str, capability: tuple) -> str:
    """Why a GPU older than MIN_CAPABILITY is left idle, and what to do instead."""
    major, minor = capability
    return (
        f"{name} has compute capability {major}.{minor}, and current Triton supports 8.0 and newer "
        f"only: on older GPUs its tl.dot has no tensor cores and bfloat16 is not supported, so the "
        f"kernels run in the CPU interpreter instead (everything works, in float16, only slower, "
        f"and without timings; for GPU timings use a GPU of compute capability 8.0 or newer, "
        f"e.g. an A100 or L4 runtime in Colab)"
    )


def interpreter_incompatibility(triton_version: str, numpy_version: str) -> str | None:
    """Known-bad (triton, numpy) pairs for the interpreter, with the advice to give.

    triton < 3.7's interpreter converts loop bounds with int(array), which numpy >= 2.4
    rejects ("only 0-dimensional arrays can be converted to Python scalars").
    """
    def major_minor(v):
        parts = v.split("+")[0].split(".")
        return int(parts[0]), int(parts[1])

    if major_minor(triton_version) < (3, 7) and major_minor(numpy_version) >= (2, 4):
        return (
            f"triton {triton_version} cannot run its CPU interpreter with numpy "
            f"{numpy_version}: install 'triton>=3.8' (or 'numpy<2.4') and restart the kernel"
        )
    return None


def _triton_already_imported_in_other_mode(want_interpreter: bool) -> bool:
    # Once a kernel module has been decorated the mode is fixed; we can only warn.
    return "triton" in sys.modules and (os.environ.get("TRITON_INTERPRET") == "1") != want_interpreter


def configure(force_interpreter: bool | None = None, verbose: bool = True) -> Runtime:
    """Decide GPU or interpreter, set TRITON_INTERPRET accordingly, and say so in one line."""
    import torch

    if force_interpreter is None:
        force_interpreter = os.environ.get("TRITON_INTERPRET") == "1"
    usable, reason = _gpu_status()
    use_interpreter = force_interpreter or not usable
    if force_interpreter and usable:
        reason = "TRITON_INTERPRET=1 was requested"

    if _triton_already_imported_in_other_mode(use_interpreter):
        raise RuntimeError(
            "triton was imported before the course's setup cell ran, so kernels would be "
            "built for the wrong target. Restart the kernel and run the setup cell first."
        )
    if use_interpreter:
        os.environ["TRITON_INTERPRET"] = "1"
        import numpy
        import triton

        advice = interpreter_incompatibility(triton.__version__, numpy.__version__)
        if advice:
            raise RuntimeError(advice)
        # bf16 tl.dot is silently wrong in the interpreter (triton issue 11584): fp16 only.
        runtime = Runtime("cpu", True, (torch.float16,), reason)
    else:
        os.environ.pop("TRITON_INTERPRET", None)
        dtypes = (torch.bfloat16, torch.float16) if torch.cuda.is_bf16_supported() else (torch.float16,)
        runtime = Runtime("cuda", False, dtypes, reason)
    if verbose:
        print("Running on the " + runtime.describe())
    return runtime


def current() -> Runtime:
    """The runtime implied by the environment, without printing."""
    return configure(verbose=False)
