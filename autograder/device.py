"""Pick where kernels run: a CUDA GPU that Triton supports, or Triton's CPU interpreter.

`configure()` must run before any `@triton.jit` function is defined: Triton decides
at decoration time whether a kernel is compiled for the GPU or interpreted, so the
environment variable TRITON_INTERPRET has to be in place first.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

MIN_CAPABILITY = (8, 0)  # Triton's tensor-core code paths need Ampere or newer


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
        return False, (
            f"{name} has compute capability {major}.{minor}; Triton's kernels here need "
            f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer (a Colab T4 is 7.5)"
        )
    return True, f"{name}, compute capability {major}.{minor}"


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
