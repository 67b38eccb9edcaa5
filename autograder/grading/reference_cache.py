"""The reference kernel's answers and counted costs, kept between judges under the interpreter.

Under the Triton interpreter a problem's performance points compare what the student's kernel and
the reference kernel ask of a GPU, counted on the same inputs (performance.count_against_reference).
The reference's side is a pure function of the reference module, the inputs and the versions, and
every judge of a class asks it the same questions: this wrapper answers them from the judge cache
(COURSE_JUDGE_CACHE, which only graders write) and starts the reference's candidate process only
for a question it has not seen. On a GPU nothing is kept: kernels are timed, and a timing belongs
to its run.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

FOLDER = "reference-calls"   # under COURSE_JUDGE_CACHE


def _digest_value(value, digest) -> bool:
    """Feed `value` into `digest`; False for a value that cannot be keyed (then nothing is kept)."""
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        digest.update(f"tensor|{t.dtype}|{tuple(t.shape)}|{t.stride()}|".encode())
        digest.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return True
    if isinstance(value, (tuple, list)):
        digest.update(f"{type(value).__name__}|{len(value)}|".encode())
        return all(_digest_value(v, digest) for v in value)
    if isinstance(value, dict):
        digest.update(f"dict|{len(value)}|".encode())
        return all(isinstance(k, str) and (digest.update(k.encode()) or _digest_value(v, digest))
                   for k, v in sorted(value.items()))
    if value is None or isinstance(value, (bool, int, float, str)):
        digest.update(f"{type(value).__name__}|{value!r}|".encode())
        return True
    return False


class CachedReference:
    """Stands in for the judge's RemoteFunction of the reference kernel: calls and counted calls
    whose answers are kept are not sent to the candidate process (so it need not start)."""

    def __init__(self, remote, source: str, folder: Path, versions: str):
        self._remote, self._folder = remote, folder
        self._base = hashlib.sha256(f"{versions}|{remote._target}|".encode() + source.encode()).hexdigest()

    def __repr__(self):
        return f"<{self._remote._target} (the reference, answers kept)>"

    def __getattr__(self, name):
        return getattr(self._remote, name)   # attributes, remote_timer: asked of the candidate

    def _path(self, kind: str, args, kwargs) -> Path | None:
        digest = hashlib.sha256(f"{self._base}|{kind}|".encode())
        if not (_digest_value(list(args), digest) and _digest_value(dict(kwargs), digest)):
            return None
        return self._folder / f"{digest.hexdigest()}.pt"

    def _kept(self, path: Path | None):
        import torch

        if path is None or not path.exists():
            return None
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # a damaged file is asked again and rewritten
            return None

    def _keep(self, path: Path | None, entry: dict) -> None:
        import torch

        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(entry, partial)
        partial.replace(path)

    def __call__(self, *args, **kwargs):
        import torch
        from torch.utils._python_dispatch import _disable_current_modes

        from ..integrity import record_remote_watch

        path = self._path("call", args, kwargs)
        entry = self._kept(path)
        if entry is None:
            with _disable_current_modes(), torch._C.DisableTorchFunction():
                result, watch = self._remote._host.call(self._remote._target, args, kwargs)
            entry = {"result": result, "watch": json.dumps(watch)}
            self._keep(path, entry)
        record_remote_watch(json.loads(entry["watch"]))
        return entry["result"]

    def remote_count(self, *args, **kwargs):
        """(result, Counts) of one counted call, as RemoteFunction.remote_count returns them."""
        import torch
        from torch.utils._python_dispatch import _disable_current_modes

        from ..counted_cost import Counts
        from ..integrity import record_remote_watch

        path = self._path("count", args, kwargs)
        entry = self._kept(path)
        if entry is None:
            with _disable_current_modes(), torch._C.DisableTorchFunction():
                result, watch, counts = self._remote._host.call(self._remote._target, args, kwargs, count=True)
            entry = {"result": result, "watch": json.dumps(watch), "counts": json.dumps(counts.to_dict())}
            self._keep(path, entry)
        record_remote_watch(json.loads(entry["watch"]))
        return entry["result"], Counts.from_dict(json.loads(entry["counts"]))


@functools.lru_cache(maxsize=1)
def grader_digest(package: Path) -> str:
    """The digest of the grader's own code (every .py file of `package`): part of the key of every
    cached verdict and reference answer, so a change to the grader judges everything again."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cached_reference(remote, source: str, interpreter: bool):
    """`remote` (the judge's RemoteFunction of the reference kernel), answered from the judge cache
    where there is one and kernels run on the interpreter; else `remote` itself."""
    folder = os.environ.get("COURSE_JUDGE_CACHE")
    if not interpreter or not folder:
        return remote
    import torch
    import triton

    from .. import __file__ as package_init

    versions = (f"{os.environ.get('TRITON_INTERPRET')}|{torch.__version__}|{triton.__version__}|"
                f"{grader_digest(Path(package_init).parent)}")
    return CachedReference(remote, source, Path(folder) / FOLDER, versions)
